//! Sequence numbers and timestamps of one outgoing stream, kept continuous whatever the incoming
//! stream does (pauses, source switches). Numbers are 64-bit until written.

use std::time::Instant;

/// Where the outgoing stream starts: low enough that the SRTP rollover counter starts at 0.
const FIRST_SEQ_MAX: u64 = 0x7fff;

#[derive(Debug, Clone)]
pub struct Munger {
    /// `out_seq = in_seq + seq_offset` (wrapping) within the current epoch.
    seq_offset: u64,
    /// First incoming sequence number of the current epoch; older packets belong to a previous
    /// source or pause and are dropped.
    epoch_first_in: u64,
    ts_offset: u32,
    last_out_seq: u64,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
    /// Set when the next packet starts a new epoch (first packet, resume, layer switch).
    rebase: bool,
}

/// The rewritten numbers of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Munged {
    pub seq: u64,
    pub timestamp: u32,
}

impl Munger {
    pub fn new(first_seq: u64) -> Munger {
        Munger {
            seq_offset: 0,
            epoch_first_in: 0,
            ts_offset: 0,
            last_out_seq: first_seq % FIRST_SEQ_MAX,
            last_out_ts: 0,
            last_out_at: None,
            rebase: true,
        }
    }

    /// The next packet continues the outgoing stream from a new anchor.
    pub fn rebase(&mut self) {
        self.rebase = true;
    }

    /// Rewrites one incoming packet (extended seq, RTP timestamp), or `None` when it belongs to an
    /// epoch that is over (a late packet of a previous source).
    pub fn munge(&mut self, in_seq: u64, in_ts: u32, now: Instant, clock_rate: u32) -> Option<Munged> {
        if self.rebase {
            self.rebase = false;
            let out_seq = self.last_out_seq + 1;
            self.seq_offset = out_seq.wrapping_sub(in_seq);
            self.epoch_first_in = in_seq;
            let out_ts = match self.last_out_at {
                None => in_ts,
                Some(at) => {
                    // Advance the clock by the wall time that passed, at least one tick, so the
                    // receiver's jitter buffer sees time move forward across the switch.
                    let elapsed = now.saturating_duration_since(at);
                    let ticks = (elapsed.as_micros() as u64 * clock_rate as u64 / 1_000_000).max(1);
                    self.last_out_ts.wrapping_add(ticks as u32)
                }
            };
            self.ts_offset = out_ts.wrapping_sub(in_ts);
        } else if in_seq < self.epoch_first_in {
            return None;
        }
        let seq = in_seq.wrapping_add(self.seq_offset);
        let timestamp = in_ts.wrapping_add(self.ts_offset);
        if seq > self.last_out_seq {
            self.last_out_seq = seq;
            self.last_out_ts = timestamp;
            self.last_out_at = Some(now);
        }
        Some(Munged { seq, timestamp })
    }

    pub fn last_seq(&self) -> u64 {
        self.last_out_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_plain_stream_keeps_its_gaps_and_order() {
        let t0 = Instant::now();
        let mut m = Munger::new(100);
        let a = m.munge(5000, 90_000, t0, 90_000).unwrap();
        assert_eq!(a.seq, 101);
        assert_eq!(a.timestamp, 90_000);
        // A gap (loss) stays a gap, so the subscriber can NACK it.
        let b = m.munge(5002, 93_000, t0, 90_000).unwrap();
        assert_eq!(b.seq, 103);
        // The late packet fills it.
        let c = m.munge(5001, 91_500, t0, 90_000).unwrap();
        assert_eq!(c.seq, 102);
        assert_eq!(m.last_seq(), 103);
    }

    #[test]
    fn a_switch_continues_without_gap_and_with_forward_time() {
        let t0 = Instant::now();
        let mut m = Munger::new(10);
        for i in 0..10u64 {
            m.munge(1000 + i, 3000 * i as u32, t0 + Duration::from_millis(33 * i), 90_000).unwrap();
        }
        let last = m.munge(1009, 27_000, t0 + Duration::from_millis(297), 90_000).unwrap();
        m.rebase();
        // The new source numbers itself very differently.
        let t_switch = t0 + Duration::from_millis(330);
        let first = m.munge(60_000, 4_000_000_000, t_switch, 90_000).unwrap();
        assert_eq!(first.seq, last.seq + 1);
        let expected_ts = last.timestamp.wrapping_add(33 * 90);
        assert_eq!(first.timestamp, expected_ts);
        // A late packet of the old source is dropped.
        assert_eq!(m.munge(59_990, 0, t_switch, 90_000), None);
        let next = m.munge(60_001, 4_000_003_000, t_switch, 90_000).unwrap();
        assert_eq!(next.seq, first.seq + 1);
        assert_eq!(next.timestamp, first.timestamp.wrapping_add(3000));
    }

    /// Three sources (simulcast layers) numbered anywhere, including just below the 16-bit and
    /// 32-bit wraps (extended numbers keep growing past them); any sequence of switches: the
    /// outgoing stream never skips, repeats or goes back in time.
    #[test]
    fn continuity_across_arbitrary_switch_sequences() {
        let t0 = Instant::now();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..50 {
            let mut sources: Vec<(u64, u32)> = vec![
                (65_530 + round, u32::MAX - 3000 * 5),
                (next() % 1_000_000, next() as u32),
                ((1 << 32) - 2 + round, 77),
            ];
            let mut m = Munger::new(next());
            let mut current = 0usize;
            let mut last: Option<Munged> = None;
            let mut now = t0;
            for step in 0..2000u64 {
                if next() % 50 == 0 {
                    current = (next() % 3) as usize;
                    m.rebase();
                }
                now += Duration::from_millis(33);
                // Every source advances in real time; only the current one is forwarded.
                for s in sources.iter_mut() {
                    s.0 += 1;
                    s.1 = s.1.wrapping_add(3000);
                }
                let (seq, ts) = sources[current];
                let out = m.munge(seq, ts, now, 90_000).expect("in-order packets of the current source are forwarded");
                if let Some(prev) = last {
                    assert_eq!(out.seq, prev.seq + 1, "round {round} step {step}: no gap, no duplicate");
                    let advance = out.timestamp.wrapping_sub(prev.timestamp) as i32;
                    assert!(advance > 0, "round {round} step {step}: time moves forward ({advance})");
                }
                last = Some(out);
            }
        }
    }

    #[test]
    fn timestamps_wrap_around() {
        let t0 = Instant::now();
        let mut m = Munger::new(0);
        let a = m.munge(1, u32::MAX - 10, t0, 90_000).unwrap();
        let b = m.munge(2, 5, t0, 90_000).unwrap();
        assert_eq!(b.timestamp.wrapping_sub(a.timestamp), 16);
        assert_eq!(b.seq, a.seq + 1);
    }
}
