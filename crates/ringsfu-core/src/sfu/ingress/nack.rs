//! Which packets of an incoming stream are missing, and when to ask for them (generic NACK).
//!
//! A gap in the extended sequence numbers is asked for at once, as libwebrtc and mediasoup do
//! (a NACK for a packet merely reordered costs one retransmission; waiting costs every repair
//! the wait). It is asked again every round trip until the packet arrives, late or on the RTX
//! stream, or until the tracker gives up; then only a keyframe repairs the picture, so
//! `poll` says how many packets were given up on.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Missing packets tracked at once; when more are missing the oldest are given up.
pub const MAX_MISSING: usize = 256;
/// A jump of more sequence numbers than this is not a gap worth repairing packet by packet:
/// the tracker starts afresh from the new packet.
pub const MAX_GAP: u64 = 1000;
/// NACKs sent for one packet at most.
pub const MAX_TRIES: u8 = 10;
/// A packet missing for this long is not asked for again: by the time it came, a keyframe
/// request would have repaired more.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(1);
/// Repeats are a round trip apart, but never closer than this (a LAN round trip is below a
/// millisecond, and the retransmission also waits in the publisher's pacer).
pub const MIN_RETRY_INTERVAL: Duration = Duration::from_millis(20);

/// The missing packets of one video stream.
#[derive(Debug)]
pub struct NackTracker {
    highest: Option<u64>,
    /// Ascending by sequence number (gaps only appear above the highest).
    missing: VecDeque<Missing>,
    /// Packets given up on since the last `poll`.
    given_up: u64,
}

#[derive(Debug, Clone, Copy)]
struct Missing {
    seq: u64,
    give_up_at: Instant,
    /// When to act on it next: NACK it again, or give it up.
    next: Instant,
    tries: u8,
}

impl Default for NackTracker {
    fn default() -> Self {
        NackTracker::new()
    }
}

impl NackTracker {
    pub fn new() -> Self {
        NackTracker { highest: None, missing: VecDeque::with_capacity(MAX_MISSING), given_up: 0 }
    }

    /// Packets missing now.
    pub fn missing(&self) -> usize {
        self.missing.len()
    }

    /// A packet with extended sequence number `extended` arrived (new, late or retransmitted).
    pub fn on_packet(&mut self, extended: u64, now: Instant) {
        let Some(highest) = self.highest else {
            self.highest = Some(extended);
            return;
        };
        if extended <= highest {
            if let Ok(i) = self.missing.binary_search_by_key(&extended, |m| m.seq) {
                self.missing.remove(i);
            }
            return;
        }
        self.highest = Some(extended);
        let gap = extended - highest - 1;
        if gap > MAX_GAP {
            self.given_up += gap + self.missing.len() as u64;
            self.missing.clear();
            return;
        }
        // Only the newest `MAX_MISSING` of a gap are worth tracking; the rest are given up
        // now, and so are the oldest tracked ones the newcomers push out.
        let tracked = gap.min(MAX_MISSING as u64);
        self.given_up += gap - tracked;
        let overflow = (self.missing.len() + tracked as usize).saturating_sub(MAX_MISSING);
        self.given_up += overflow as u64;
        self.missing.drain(..overflow);
        let entry = Missing { seq: 0, give_up_at: now + GIVE_UP_AFTER, next: now, tries: 0 };
        self.missing.extend((extended - tracked..extended).map(|seq| Missing { seq, ..entry }));
    }

    /// When `poll` has something to do next, if ever.
    pub fn next_due(&self) -> Option<Instant> {
        self.missing.iter().map(|m| m.next).min()
    }

    /// Pushes onto `out` the sequence numbers to NACK now, ascending (modulo the wrap), and
    /// returns how many packets were given up on since the previous poll (more than 0: the
    /// caller should ask for a keyframe). `rtt` is the round trip to the publisher.
    #[must_use = "given up packets call for a keyframe request"]
    pub fn poll(&mut self, now: Instant, rtt: Duration, out: &mut impl Extend<u16>) -> u64 {
        let interval = rtt.max(MIN_RETRY_INTERVAL);
        let mut given_up = std::mem::take(&mut self.given_up);
        self.missing.retain_mut(|m| {
            if now < m.next {
                return true;
            }
            if m.tries >= MAX_TRIES || now >= m.give_up_at {
                given_up += 1;
                return false;
            }
            out.extend(std::iter::once(m.seq as u16));
            m.tries += 1;
            m.next = (now + interval).min(m.give_up_at);
            true
        });
        given_up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RTT: Duration = Duration::from_millis(50);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn poll(t: &mut NackTracker, now: Instant, rtt: Duration) -> (Vec<u16>, u64) {
        let mut out = Vec::new();
        let given_up = t.poll(now, rtt, &mut out);
        (out, given_up)
    }

    #[test]
    fn nothing_is_due_without_a_gap() {
        let now = Instant::now();
        let mut t = NackTracker::new();
        for seq in 100..110 {
            t.on_packet(seq, now);
        }
        // Reordered and repeated packets make no gap either.
        t.on_packet(105, now);
        assert_eq!(t.next_due(), None);
        assert_eq!(poll(&mut t, now + ms(500), RTT), (vec![], 0));
    }

    #[test]
    fn a_gap_is_nacked_at_once_and_again_every_round_trip() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(10, t0);
        t.on_packet(13, t0);
        assert_eq!(t.missing(), 2);
        assert_eq!(t.next_due(), Some(t0));
        assert_eq!(poll(&mut t, t0, RTT), (vec![11, 12], 0));
        // Not again before a round trip.
        assert_eq!(t.next_due(), Some(t0 + RTT));
        assert_eq!(poll(&mut t, t0 + ms(49), RTT), (vec![], 0));
        assert_eq!(poll(&mut t, t0 + RTT, RTT), (vec![11, 12], 0));
        // A round trip shorter than the floor waits the floor.
        assert_eq!(poll(&mut t, t0 + RTT, ms(1)), (vec![], 0));
        assert_eq!(t.next_due(), Some(t0 + RTT + RTT));
        assert_eq!(poll(&mut t, t0 + RTT + RTT, ms(1)), (vec![11, 12], 0));
        assert_eq!(t.next_due(), Some(t0 + RTT + RTT + MIN_RETRY_INTERVAL));
    }

    #[test]
    fn a_packet_that_arrives_leaves_the_list() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(1, t0);
        t.on_packet(5, t0);
        assert_eq!(poll(&mut t, t0, RTT), (vec![2, 3, 4], 0));
        // 3 comes late, 2 on the RTX stream.
        t.on_packet(3, t0 + ms(10));
        t.on_packet(2, t0 + ms(20));
        assert_eq!(t.missing(), 1);
        assert_eq!(poll(&mut t, t0 + RTT, RTT), (vec![4], 0));
        t.on_packet(4, t0 + ms(60));
        assert_eq!(t.next_due(), None);
        assert_eq!(poll(&mut t, t0 + ms(2000), RTT), (vec![], 0));
    }

    #[test]
    fn a_packet_is_asked_for_at_most_max_tries_times() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(1, t0);
        t.on_packet(3, t0);
        let mut sent = 0;
        let mut given_up = 0;
        let mut now = t0;
        // 20 ms apart, the 10 tries are done in 200 ms, before the 1 s limit.
        while let Some(due) = t.next_due() {
            now = due;
            let (out, gone) = poll(&mut t, now, ms(20));
            sent += out.len();
            given_up += gone;
        }
        assert_eq!(sent, usize::from(MAX_TRIES));
        assert_eq!(given_up, 1);
        assert_eq!(now, t0 + ms(200));
    }

    #[test]
    fn a_packet_is_given_up_after_a_second() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(1, t0);
        t.on_packet(3, t0);
        let (mut sent, mut given_up, mut now) = (0, 0, t0);
        // 300 ms apart: sent at 0, 300, 600, 900; given up at 1000.
        while let Some(due) = t.next_due() {
            now = due;
            let (out, gone) = poll(&mut t, now, ms(300));
            sent += out.len();
            given_up += gone;
        }
        assert_eq!((sent, given_up), (4, 1));
        assert_eq!(now, t0 + GIVE_UP_AFTER);
        // A late arrival after that changes nothing.
        t.on_packet(2, now);
        assert_eq!(poll(&mut t, now, RTT), (vec![], 0));
    }

    #[test]
    fn a_jump_beyond_the_bound_starts_afresh() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(100, t0);
        t.on_packet(103, t0);
        t.on_packet(103 + MAX_GAP + 2, t0);
        assert_eq!(t.missing(), 0);
        // The two tracked and the whole gap are given up.
        assert_eq!(poll(&mut t, t0, RTT), (vec![], 2 + MAX_GAP + 1));
        // A gap right at the bound is still tracked (its newest MAX_MISSING).
        let mut t = NackTracker::new();
        t.on_packet(0, t0);
        t.on_packet(MAX_GAP + 1, t0);
        assert_eq!(t.missing(), MAX_MISSING);
        let (out, gone) = poll(&mut t, t0, RTT);
        assert_eq!(gone, MAX_GAP - MAX_MISSING as u64);
        assert_eq!(out.first().copied(), Some((MAX_GAP + 1 - MAX_MISSING as u64) as u16));
        assert_eq!(out.last().copied(), Some(MAX_GAP as u16));
    }

    #[test]
    fn the_oldest_are_dropped_when_too_many_are_missing() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        let mut seq = 0;
        t.on_packet(seq, t0);
        // 300 gaps of one packet each (1, 3, …, 599 missing).
        for _ in 0..300 {
            seq += 2;
            t.on_packet(seq, t0);
        }
        assert_eq!(t.missing(), MAX_MISSING);
        let (out, gone) = poll(&mut t, t0, RTT);
        assert_eq!(gone, 300 - MAX_MISSING as u64);
        assert_eq!(out.len(), MAX_MISSING);
        // The newest are kept: the last missing is 599, the first 599 - 2 * 255.
        assert_eq!(out.first().copied(), Some(599 - 2 * 255));
        assert_eq!(out.last().copied(), Some(599));
        // Bounded without growing.
        assert_eq!(t.missing.capacity(), NackTracker::new().missing.capacity());
    }

    #[test]
    fn sequence_numbers_wrap_on_the_wire_but_not_in_the_list() {
        let t0 = Instant::now();
        let mut t = NackTracker::new();
        t.on_packet(65_533, t0);
        t.on_packet(65_536 + 2, t0);
        assert_eq!(poll(&mut t, t0, RTT), (vec![65_534, 65_535, 0, 1], 0));
        t.on_packet(65_536, t0);
        assert_eq!(poll(&mut t, t0 + RTT, RTT), (vec![65_534, 65_535, 1], 0));
    }
}
