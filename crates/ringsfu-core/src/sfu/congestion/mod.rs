//! Send-side bandwidth estimation for the packets ringsfu sends itself, from transport-wide
//! congestion control feedback. Sans-IO: time is an argument, nothing else comes from outside,
//! and nothing allocates after `new` (the history is one boxed ring; every other buffer is a
//! fixed array, and feedback is read in place).
//!
//! Sources followed (facts and constants; the code is our own):
//! - draft-holmer-rmcat-transport-wide-cc-extensions-01 §3.1: the feedback format (`feedback`);
//! - draft-ietf-rmcat-gcc-02 §5: send-time groups (`arrival_groups`), the overuse detector with
//!   its adaptive threshold (`overuse`), AIMD rate control (`rate_control`); §6: the loss-based
//!   controller (`loss`);
//! - libwebrtc's goog_cc: the trendline filter that replaced the draft's Kalman filter
//!   (`trendline`), the link capacity estimate and 1.5 × acknowledged cap of AimdRateControl,
//!   the acknowledged bitrate (`acked`), and probing as ProbeController / BitrateProber /
//!   ProbeBitrateEstimator (`probe_controller`, `prober`, `probe_results`).
//!
//! The estimate is the delay-based one, bounded by the loss-based one while heavy loss lasts,
//! within `MIN_ESTIMATE..=MAX_ESTIMATE`. Call order: `on_packet_sent` for every packet,
//! `on_feedback` for every feedback; after either, and after `set_desired`, poll
//! `poll_estimate`, `poll_probe` until `None`, and arm `next_timeout`.

mod acked;
mod arrival_groups;
pub mod feedback;
mod history;
mod loss;
mod overuse;
mod probe_controller;
mod probe_results;
mod prober;
mod rate_control;
#[cfg(test)]
mod sim;
mod trendline;

use acked::AckedRate;
use arrival_groups::ArrivalGroups;
use history::{SentHistory, Status};
use loss::LossBound;
use overuse::{OveruseDetector, Usage};
use probe_controller::{Plan, ProbeController};
use probe_results::ProbeResults;
use prober::Prober;
use rate_control::RateControl;
use std::time::{Duration, Instant};
use trendline::Trendline;

/// The estimate's floor and cap, bit/s.
pub const MIN_ESTIMATE: u64 = 100_000;
pub const MAX_ESTIMATE: u64 = 100_000_000;
/// Feedback missing this long, while packets go out, lowers the estimate by `TIMEOUT_BACKOFF`
/// (as libwebrtc's SendSideBandwidthEstimation does), and again every such period.
const FEEDBACK_TIMEOUT: Duration = Duration::from_millis(1_500);
const TIMEOUT_BACKOFF: f64 = 0.8;
/// After a decrease, the link does not "look fine" for periodic probing for this long.
const CALM_AFTER_DECREASE: Duration = Duration::from_secs(1);
/// `poll_estimate` reports rises beyond this fraction (and every fall).
const NOTABLE_RISE: f64 = 1.05;

/// Probe padding to send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeSend {
    pub cluster: u32,
    pub bytes: usize,
}

/// Why a feedback packet was refused (the estimator is unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackError {
    /// It ends before what its header or chunks announce.
    Truncated,
    /// Not a transport-wide feedback, or fields that make no sense.
    Malformed,
}

#[derive(Debug)]
pub struct SendSideEstimator {
    /// Send times are kept as µs after this.
    epoch: Instant,
    history: SentHistory,
    groups: ArrivalGroups,
    trendline: Trendline,
    detector: OveruseDetector,
    rate: RateControl,
    acked: AckedRate,
    loss: LossBound,
    prober: Prober,
    probes: ProbeResults,
    controller: ProbeController,
    /// The last reference time (24 bits) and its unwrapped value.
    reference: Option<(u32, i64)>,
    last_feedback_count: Option<u8>,
    last_feedback: Option<Instant>,
    /// When the missing feedback last lowered the estimate.
    last_timeout_backoff: Option<Instant>,
    rtt: Option<Duration>,
    estimate: u64,
    polled: u64,
    desired: u64,
}

impl SendSideEstimator {
    /// `initial_bps`: the estimate before any feedback.
    pub fn new(initial_bps: u64, now: Instant) -> SendSideEstimator {
        let initial = initial_bps.clamp(MIN_ESTIMATE, MAX_ESTIMATE);
        SendSideEstimator {
            epoch: now,
            history: SentHistory::new(),
            groups: ArrivalGroups::default(),
            trendline: Trendline::default(),
            detector: OveruseDetector::default(),
            rate: RateControl::new(initial, MIN_ESTIMATE, MAX_ESTIMATE),
            acked: AckedRate::default(),
            loss: LossBound::default(),
            prober: Prober::default(),
            probes: ProbeResults::default(),
            controller: ProbeController::default(),
            reference: None,
            last_feedback_count: None,
            last_feedback: None,
            last_timeout_backoff: None,
            rtt: None,
            estimate: initial,
            polled: initial,
            desired: 0,
        }
    }

    /// A packet stamped with transport-wide sequence number `seq` and `size` bytes on the wire
    /// left now; `probe`: its cluster when it is probe padding.
    pub fn on_packet_sent(&mut self, seq: u16, size: usize, probe: Option<u32>, now: Instant) {
        let sent_us = self.micros(now);
        let cluster = match probe {
            Some(cluster) => cluster,
            None => {
                // Media going out during a probe cluster is part of it.
                self.prober.on_media(size);
                self.prober.active().unwrap_or(0)
            }
        };
        self.history.on_sent(seq, size, cluster, sent_us);
        if cluster != 0 {
            self.probes.on_sent(cluster, u16::try_from(size).unwrap_or(u16::MAX), sent_us);
        }
    }

    /// One transport-wide feedback packet, from its RTCP header to its end. Refused packets
    /// change nothing.
    pub fn on_feedback(&mut self, packet: &[u8], now: Instant) -> Result<(), FeedbackError> {
        let feedback = feedback::parse(packet)?;
        if self.last_feedback_count == Some(feedback.feedback_count) {
            // The same feedback again.
            return Ok(());
        }
        self.last_feedback_count = Some(feedback.feedback_count);
        self.last_feedback = Some(now);
        let reference_us = self.unwrap_reference(feedback.reference_time) * feedback::REFERENCE_UNIT_US;
        let mut newest: Option<(u64, u64)> = None;
        for reported in feedback.packets() {
            let Some(packet) = self.history.get_mut(reported.seq) else { continue };
            let Some(offset) = reported.arrival_offset_us else {
                if packet.status == Status::Unreported {
                    packet.status = Status::Lost;
                    self.loss.on_reported(false, now);
                    if packet.cluster != 0 {
                        self.probes.on_lost(packet.cluster);
                    }
                }
                continue;
            };
            let before = packet.status;
            if before == Status::Received {
                continue;
            }
            packet.status = Status::Received;
            let packet = *packet;
            let arrival_us = reference_us + offset;
            if before == Status::Lost {
                self.loss.on_late_arrival();
            } else {
                self.loss.on_reported(true, now);
                // A packet received after being reported lost is out of its group's order:
                // only first reports feed the delay trend.
                if let Some(delta) = self.groups.on_packet(packet.sent_us as i64, arrival_us) {
                    let trend = self.trendline.update(delta);
                    self.detector.detect(trend);
                }
            }
            self.acked.on_received(arrival_us, usize::from(packet.size));
            if packet.cluster != 0 {
                self.probes.on_received(packet.cluster, packet.size, arrival_us, before == Status::Lost);
            }
            if newest.is_none_or(|(seq, _)| packet.seq > seq) {
                newest = Some((packet.seq, packet.sent_us));
            }
        }
        if let Some((_, sent_us)) = newest {
            let rtt = now.saturating_duration_since(self.epoch + Duration::from_micros(sent_us));
            self.rtt = Some(rtt);
            self.rate.set_rtt(rtt);
        }

        let probed = self.take_probe_outcomes(now);
        if !probed {
            let acked = self.acked.estimate();
            if self.rate.update(self.detector.usage(), acked, now).is_some() {
                let estimate = self.combined();
                let plan = self.controller.on_capacity_exceeded(estimate, now);
                self.queue_plan(plan, now);
            }
        }
        let rtt = self.rtt.unwrap_or_default();
        self.loss.update(now, self.combined() as f64, self.rate.estimate(), rtt);
        self.estimate = self.combined();
        Ok(())
    }

    /// Current estimate, bit/s.
    pub fn estimate(&self) -> u64 {
        self.estimate
    }

    /// The estimate when it rose notably or fell since last polled.
    pub fn poll_estimate(&mut self) -> Option<u64> {
        let changed = self.estimate < self.polled || self.estimate as f64 > self.polled as f64 * NOTABLE_RISE;
        changed.then(|| {
            self.polled = self.estimate;
            self.estimate
        })
    }

    /// What the consumers could use in all, bit/s.
    pub fn set_desired(&mut self, desired_bps: u64, now: Instant) {
        self.desired = desired_bps;
        let plan = self.controller.on_desired(desired_bps, self.estimate, now);
        self.queue_plan(plan, now);
    }

    /// Probe padding due now; ask again until `None`.
    pub fn poll_probe(&mut self, now: Instant) -> Option<ProbeSend> {
        while let Some(step) = self.prober.poll(now) {
            if step.last {
                self.probes.on_requested_all(step.send.cluster);
            }
            if step.send.bytes > 0 {
                return Some(step.send);
            }
        }
        None
    }

    /// When `handle_timeout` is due next.
    pub fn next_timeout(&self) -> Option<Instant> {
        [self.prober.next_step(), self.probes.next_expiry(), self.controller.next_timeout(), self.feedback_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.take_probe_outcomes(now);
        if self.feedback_deadline().is_some_and(|at| at <= now) {
            self.last_timeout_backoff = Some(now);
            self.rate.reduce_to(self.rate.estimate() * TIMEOUT_BACKOFF, now);
        }
        let link_fine = self.detector.usage() != Usage::Overusing
            && self.loss.bound().is_none()
            && self.rate.last_decrease().is_none_or(|t| now.saturating_duration_since(t) >= CALM_AFTER_DECREASE);
        let plan = self.controller.on_timeout(self.estimate, link_fine, now);
        self.queue_plan(plan, now);
        self.estimate = self.combined();
    }

    /// Send time of the newest acknowledged packet to its feedback's arrival.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    fn micros(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_micros() as u64
    }

    fn combined(&self) -> u64 {
        let delay_based = self.rate.estimate();
        let bound = self.loss.bound().map_or(delay_based, |b| b.min(delay_based));
        (bound as u64).clamp(MIN_ESTIMATE, MAX_ESTIMATE)
    }

    /// The reference time, unwrapped from its 24 bits.
    fn unwrap_reference(&mut self, raw: u32) -> i64 {
        let unwrapped = match self.reference {
            None => i64::from(raw),
            Some((last_raw, last)) => {
                // The signed 24-bit difference from the last one.
                let delta = ((raw.wrapping_sub(last_raw) << 8) as i32 >> 8) as i64;
                last + delta
            }
        };
        self.reference = Some((raw, unwrapped));
        unwrapped
    }

    /// Applies the verdicts of finished probe clusters; whether one raised the estimate.
    fn take_probe_outcomes(&mut self, now: Instant) -> bool {
        let mut raised = false;
        while let Some(outcome) = self.probes.take_outcome(now) {
            if let Some(measured) = outcome.measured_bps
                && measured > self.rate.estimate()
                && self.detector.usage() != Usage::Overusing
            {
                self.rate.set_estimate(measured, now);
                self.loss.on_probe(measured);
                raised = true;
            }
            self.estimate = self.combined();
            let plan = self.controller.on_outcome(outcome.cluster, outcome.measured_bps, self.estimate, now);
            self.queue_plan(plan, now);
        }
        raised
    }

    fn queue_plan(&mut self, plan: Option<Plan>, now: Instant) {
        let Some(plan) = plan else { return };
        let mut top = None;
        for &target in plan.targets() {
            let Some(cluster) = self.prober.enqueue(target, now) else { break };
            self.probes.start(cluster, target, now);
            top = Some(cluster);
        }
        if let Some(cluster) = top {
            self.controller.on_queued(cluster, &plan, self.estimate, now);
        }
    }

    /// When missing feedback next lowers the estimate: only once feedback has come at all, and
    /// packets have gone out since the last one.
    fn feedback_deadline(&self) -> Option<Instant> {
        let last = self.last_feedback?;
        let (_, sent_us) = self.history.last_sent()?;
        if self.epoch + Duration::from_micros(sent_us) <= last {
            return None;
        }
        Some(self.last_timeout_backoff.filter(|t| *t > last).unwrap_or(last) + FEEDBACK_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::feedback::build;
    use super::*;

    const REMOTE_START_US: i64 = 1_000_000;

    /// Sends `count` 1,000-byte packets from `first`, 10 ms apart.
    fn send(e: &mut SendSideEstimator, t0: Instant, first: u16, count: u16) {
        for i in 0..count {
            e.on_packet_sent(first.wrapping_add(i), 1_000, None, t0 + Duration::from_millis(u64::from(i) * 10));
        }
    }

    /// Each packet of `statuses` arriving 30 ms after it was sent (packet `i` sent at 10 i ms).
    fn arrivals(first_index: u16, received: &[bool]) -> Vec<Option<i64>> {
        received
            .iter()
            .enumerate()
            .map(|(i, r)| r.then_some(REMOTE_START_US + (i64::from(first_index) + i as i64) * 10_000 + 30_000))
            .collect()
    }

    /// A hostile browser can send anything: random feedback packets (random bytes behind a valid
    /// header, and well-formed ones with random sequence numbers, statuses and deltas) never
    /// panic and never take the estimate out of its bounds.
    #[test]
    fn random_feedback_never_panics_and_keeps_the_estimate_in_bounds() {
        let t0 = Instant::now();
        let mut e = SendSideEstimator::new(600_000, t0);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut now = t0;
        for round in 0..2_000u32 {
            now += Duration::from_millis(5);
            e.on_packet_sent(round as u16, 200 + (next() % 1_000) as usize, None, now);
            let packet = if round % 2 == 0 {
                let len = 8 + (next() % 120) as usize;
                let mut p: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let words = (len / 4 - 1) as u16;
                p[..4].copy_from_slice(&[0x8f, 205, (words >> 8) as u8, words as u8]);
                p.truncate(4 * (usize::from(words) + 1));
                p
            } else {
                let count = (next() % 40) as usize;
                // Arrivals within ±4 s: what the format's deltas can carry between two of them.
                let statuses: Vec<Option<i64>> =
                    (0..count).map(|_| (next() % 4 != 0).then(|| (next() % 8_000_000) as i64 - 4_000_000)).collect();
                build::feedback(next() as u16, next() as u8, &statuses)
            };
            let _ = e.on_feedback(&packet, now);
            e.handle_timeout(now);
            while e.poll_probe(now).is_some() {}
            assert!((MIN_ESTIMATE..=MAX_ESTIMATE).contains(&e.estimate()), "round {round}: {}", e.estimate());
        }
    }

    #[test]
    fn refused_feedback_changes_nothing() {
        let t0 = Instant::now();
        let mut e = SendSideEstimator::new(600_000, t0);
        send(&mut e, t0, 100, 20);
        let good = build::feedback(100, 0, &arrivals(0, &[true; 10]));
        e.on_feedback(&good, t0 + Duration::from_millis(150)).unwrap();
        let before = format!("{e:?}");
        let mut garbage = good.clone();
        garbage[20] = 0xff; // a two-bit vector with reserved symbols
        let cases: [&[u8]; 4] = [&[], &good[..good.len() - 4], &garbage, &[0x8f, 205, 0, 0]];
        for packet in cases {
            assert!(e.on_feedback(packet, t0 + Duration::from_millis(200)).is_err(), "{packet:?}");
            assert_eq!(format!("{e:?}"), before);
        }
    }

    #[test]
    fn measures_the_round_trip_and_ignores_unknown_and_duplicate_feedback() {
        let t0 = Instant::now();
        let mut e = SendSideEstimator::new(600_000, t0);
        assert_eq!(e.rtt(), None);
        send(&mut e, t0, 65_530, 10);
        // Packets 0..5 (65530..65535) reported at 100 ms: the newest was sent at 40 ms.
        let fb = build::feedback(65_530, 0, &arrivals(0, &[true; 5]));
        e.on_feedback(&fb, t0 + Duration::from_millis(100)).unwrap();
        assert_eq!(e.rtt(), Some(Duration::from_millis(60)));
        // The same feedback count again, later: a duplicate, ignored.
        e.on_feedback(&fb, t0 + Duration::from_millis(300)).unwrap();
        assert_eq!(e.rtt(), Some(Duration::from_millis(60)));
        // Sequence numbers never sent (ahead of the last) are ignored, wrap included.
        let ahead = build::feedback(10, 1, &[Some(REMOTE_START_US + 500_000)]);
        e.on_feedback(&ahead, t0 + Duration::from_millis(310)).unwrap();
        assert_eq!(e.rtt(), Some(Duration::from_millis(60)));
        // Across the wrap: packets 65535..=3 (indices 5..10), the newest sent at 90 ms.
        let fb = build::feedback(65_535, 2, &arrivals(5, &[true; 5]));
        e.on_feedback(&fb, t0 + Duration::from_millis(200)).unwrap();
        assert_eq!(e.rtt(), Some(Duration::from_millis(110)));
    }

    #[test]
    fn a_packet_reported_lost_then_received_counts_once() {
        let t0 = Instant::now();
        let mut e = SendSideEstimator::new(600_000, t0);
        send(&mut e, t0, 0, 10);
        let mut received = [true; 10];
        received[3] = false;
        e.on_feedback(&build::feedback(0, 0, &arrivals(0, &received)), t0 + Duration::from_millis(150)).unwrap();
        assert_eq!(e.history.get_mut(3).unwrap().status, Status::Lost);
        // A later feedback reports it (only) as received after all.
        e.on_feedback(&build::feedback(3, 1, &arrivals(3, &[true])), t0 + Duration::from_millis(200)).unwrap();
        assert_eq!(e.history.get_mut(3).unwrap().status, Status::Received);
        assert_eq!(e.loss.window(), (10, 0));
    }

    #[test]
    fn unwraps_the_24_bit_reference_time() {
        let t0 = Instant::now();
        let mut e = SendSideEstimator::new(600_000, t0);
        let top = (1 << 24) - 2;
        assert_eq!(e.unwrap_reference(top), i64::from(top));
        assert_eq!(e.unwrap_reference(1), i64::from(top) + 3);
        assert_eq!(e.unwrap_reference(top + 1), i64::from(top) + 1, "a late feedback from before the wrap");
    }

    #[test]
    fn missing_feedback_lowers_the_estimate() {
        let t0 = Instant::now();
        let mut e = SendSideEstimator::new(1_000_000, t0);
        send(&mut e, t0, 0, 10);
        e.on_feedback(&build::feedback(0, 0, &arrivals(0, &[true; 10])), t0 + Duration::from_millis(150)).unwrap();
        assert_eq!(e.next_timeout(), None, "nothing sent since the feedback");
        let before = e.estimate();
        e.poll_estimate();
        e.on_packet_sent(10, 1_000, None, t0 + Duration::from_millis(200));
        let due = e.next_timeout().unwrap();
        assert_eq!(due, t0 + Duration::from_millis(150) + FEEDBACK_TIMEOUT);
        e.handle_timeout(due);
        assert_eq!(e.estimate(), before * 8 / 10);
        assert_eq!(e.poll_estimate(), Some(before * 8 / 10));
        assert_eq!(e.poll_estimate(), None);
        let again = e.next_timeout().unwrap();
        assert_eq!(again, due + FEEDBACK_TIMEOUT);
        e.handle_timeout(again);
        assert_eq!(e.estimate(), before * 64 / 100);
    }

    #[test]
    fn probes_go_out_paced_and_nothing_without_a_wish() {
        let t0 = Instant::now();
        let mut e = SendSideEstimator::new(600_000, t0);
        assert_eq!(e.poll_probe(t0), None);
        assert_eq!(e.next_timeout(), None);
        e.set_desired(3_000_000, t0);
        assert_eq!(e.next_timeout(), Some(t0));
        let first = e.poll_probe(t0).unwrap();
        assert_eq!(first, ProbeSend { cluster: 1, bytes: 1_125 });
        assert_eq!(e.poll_probe(t0), None, "the next step is 5 ms later");
        assert_eq!(e.next_timeout(), Some(t0 + prober::STEP));
    }
}
