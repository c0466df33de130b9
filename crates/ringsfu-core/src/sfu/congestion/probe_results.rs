//! What each probe cluster measured, from the feedback on its packets (libwebrtc's
//! ProbeBitrateEstimator): the rate at which the receiver got the cluster, accepted when at
//! least 80% of its packets and bytes arrived. The send rate leaves out the last packet sent and
//! the receive rate the first received (each interval is counted between packets); a receive
//! rate well below the send rate means the cluster filled the link, and 95% of the receive rate
//! is taken as what it holds. The prober sends in 5 ms steps, not packet by packet, which makes
//! both rates read high on an ample link (the last step's bytes go out at once): neither counts
//! above the cluster's target.

use std::time::{Duration, Instant};

/// Clusters followed at once (a chain has one or two in flight).
const SLOTS: usize = 8;
const MIN_PACKETS: u32 = 3;
const MIN_RECEIVED_FRACTION: f64 = 0.8;
const MAX_INTERVAL_US: i64 = 1_000_000;
/// A receive rate this much above the send rate is a measuring artefact.
const MAX_RECEIVE_TO_SEND: f64 = 2.0;
const SATURATED_RATIO: f64 = 0.9;
const SATURATED_TARGET: f64 = 0.95;
/// A cluster not fully reported by then is judged on what arrived.
const EXPIRY: Duration = Duration::from_millis(1_500);

#[derive(Debug, Clone, Copy)]
struct Cluster {
    id: u32,
    target_bps: u64,
    created: Instant,
    requested_all: bool,
    sent_packets: u32,
    sent_bytes: u64,
    first_send_us: u64,
    last_send_us: u64,
    last_sent_size: u16,
    received_packets: u32,
    lost_packets: u32,
    received_bytes: u64,
    first_arrival_us: i64,
    first_arrival_size: u16,
    last_arrival_us: i64,
}

/// A cluster's verdict: its measured rate, or `None` when it measured nothing usable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProbeOutcome {
    pub cluster: u32,
    pub target_bps: u64,
    pub measured_bps: Option<f64>,
}

#[derive(Debug, Default)]
pub struct ProbeResults {
    slots: [Option<Cluster>; SLOTS],
}

impl ProbeResults {
    pub fn start(&mut self, id: u32, target_bps: u64, now: Instant) {
        self.slots[id as usize % SLOTS] = Some(Cluster {
            id,
            target_bps,
            created: now,
            requested_all: false,
            sent_packets: 0,
            sent_bytes: 0,
            first_send_us: 0,
            last_send_us: 0,
            last_sent_size: 0,
            received_packets: 0,
            lost_packets: 0,
            received_bytes: 0,
            first_arrival_us: 0,
            first_arrival_size: 0,
            last_arrival_us: 0,
        });
    }

    fn get(&mut self, id: u32) -> Option<&mut Cluster> {
        self.slots[id as usize % SLOTS].as_mut().filter(|c| c.id == id)
    }

    /// The prober handed out the cluster's last step.
    pub fn on_requested_all(&mut self, id: u32) {
        if let Some(c) = self.get(id) {
            c.requested_all = true;
        }
    }

    pub fn on_sent(&mut self, id: u32, size: u16, sent_us: u64) {
        let Some(c) = self.get(id) else { return };
        if c.sent_packets == 0 {
            c.first_send_us = sent_us;
        }
        c.sent_packets += 1;
        c.sent_bytes += u64::from(size);
        c.last_send_us = sent_us;
        c.last_sent_size = size;
    }

    /// A packet of the cluster reported received; `was_lost` when reported lost before.
    pub fn on_received(&mut self, id: u32, size: u16, arrival_us: i64, was_lost: bool) {
        let Some(c) = self.get(id) else { return };
        if was_lost {
            c.lost_packets = c.lost_packets.saturating_sub(1);
        }
        if c.received_packets == 0 || arrival_us < c.first_arrival_us {
            c.first_arrival_us = arrival_us;
            c.first_arrival_size = size;
        }
        if c.received_packets == 0 || arrival_us > c.last_arrival_us {
            c.last_arrival_us = arrival_us;
        }
        c.received_packets += 1;
        c.received_bytes += u64::from(size);
    }

    pub fn on_lost(&mut self, id: u32) {
        if let Some(c) = self.get(id) {
            c.lost_packets += 1;
        }
    }

    /// The next cluster whose verdict is in: every packet sent reported, or expired.
    pub fn take_outcome(&mut self, now: Instant) -> Option<ProbeOutcome> {
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| s.is_some_and(|c| c.is_complete() || now.saturating_duration_since(c.created) >= EXPIRY))
            .min_by_key(|s| s.map_or(u32::MAX, |c| c.id))?;
        let cluster = slot.take()?;
        Some(ProbeOutcome { cluster: cluster.id, target_bps: cluster.target_bps, measured_bps: cluster.measure() })
    }

    /// When the oldest cluster expires.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.slots.iter().flatten().map(|c| c.created + EXPIRY).min()
    }
}

impl Cluster {
    fn is_complete(&self) -> bool {
        self.requested_all && self.sent_packets > 0 && self.received_packets + self.lost_packets >= self.sent_packets
    }

    fn measure(&self) -> Option<f64> {
        if self.sent_packets < MIN_PACKETS
            || f64::from(self.received_packets) < MIN_RECEIVED_FRACTION * f64::from(self.sent_packets)
            || (self.received_bytes as f64) < MIN_RECEIVED_FRACTION * self.sent_bytes as f64
        {
            return None;
        }
        let send_us = self.last_send_us.checked_sub(self.first_send_us)? as i64;
        let receive_us = self.last_arrival_us - self.first_arrival_us;
        if !(1..=MAX_INTERVAL_US).contains(&send_us) || !(1..=MAX_INTERVAL_US).contains(&receive_us) {
            return None;
        }
        let send_bps = ((self.sent_bytes - u64::from(self.last_sent_size)) as f64 * 8e6 / send_us as f64)
            .min(self.target_bps as f64);
        let receive_bps = (self.received_bytes - u64::from(self.first_arrival_size)) as f64 * 8e6 / receive_us as f64;
        if receive_bps > MAX_RECEIVE_TO_SEND * send_bps {
            return None;
        }
        if receive_bps < SATURATED_RATIO * send_bps {
            return Some(SATURATED_TARGET * receive_bps);
        }
        Some(send_bps.min(receive_bps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cluster of `packets` 500-byte packets at 2 Mbit/s sent `send_us` apart, received
    /// `spacing_us` apart, the ones in `lost` missing.
    fn run_at(packets: u32, send_us: u64, spacing_us: i64, lost: &[u32], now: Instant) -> ProbeResults {
        let mut r = ProbeResults::default();
        r.start(7, 2_000_000, now);
        for i in 0..packets {
            r.on_sent(7, 500, u64::from(i) * send_us);
        }
        r.on_requested_all(7);
        for i in 0..packets {
            if lost.contains(&i) {
                r.on_lost(7);
            } else {
                r.on_received(7, 500, 50_000 + i64::from(i) * spacing_us, false);
            }
        }
        r
    }

    fn run(packets: u32, spacing_us: i64, lost: &[u32], now: Instant) -> ProbeResults {
        run_at(packets, 2_000, spacing_us, lost, now)
    }

    #[test]
    fn a_cluster_through_an_ample_link_measures_its_send_rate() {
        let now = Instant::now();
        let mut r = run(10, 2_000, &[], now);
        let outcome = r.take_outcome(now).unwrap();
        // 9 intervals of 2 ms carrying 9 x 500 bytes: 2 Mbit/s.
        assert_eq!(outcome, ProbeOutcome { cluster: 7, target_bps: 2_000_000, measured_bps: Some(2_000_000.0) });
        assert_eq!(r.take_outcome(now), None);
        // Sent faster than its target (in steps): no more than the target counts.
        let mut r = run_at(10, 1_000, 1_000, &[], now);
        assert_eq!(r.take_outcome(now).unwrap().measured_bps, Some(2_000_000.0));
    }

    #[test]
    fn a_cluster_that_filled_the_link_measures_95_percent_of_what_arrived() {
        let now = Instant::now();
        let mut r = run(10, 4_000, &[], now);
        let measured = r.take_outcome(now).unwrap().measured_bps.unwrap();
        assert!((measured - 950_000.0).abs() < 1.0, "{measured}");
    }

    #[test]
    fn too_many_losses_or_no_report_measure_nothing() {
        let now = Instant::now();
        let mut r = run(10, 2_000, &[1, 2, 3], now);
        assert_eq!(r.take_outcome(now).unwrap().measured_bps, None);
        // Never reported: waits, then expires without a measure.
        let mut r = ProbeResults::default();
        r.start(9, 1_000_000, now);
        r.on_sent(9, 500, 0);
        r.on_requested_all(9);
        assert_eq!(r.take_outcome(now), None);
        assert_eq!(r.next_expiry(), Some(now + EXPIRY));
        assert_eq!(r.take_outcome(now + EXPIRY).unwrap().measured_bps, None);
    }

    #[test]
    fn packets_of_unknown_clusters_are_ignored() {
        let now = Instant::now();
        let mut r = ProbeResults::default();
        r.on_sent(3, 500, 0);
        r.on_received(3, 500, 0, false);
        assert_eq!(r.take_outcome(now + EXPIRY), None);
    }
}
