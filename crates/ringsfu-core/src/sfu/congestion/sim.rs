//! The estimator on a simulated path, in virtual time: a sender offering media at
//! min(wish, estimate) in 1,200-byte packets, one burst per frame at 30 fps, plus the probe
//! padding the estimator asks for (300-byte packets, as the shard's padding); a FIFO bottleneck
//! of capacity C with a byte-limited queue, optional random loss and 20 ms of propagation; a
//! receiver that records arrivals on its own clock (whose 24-bit reference time wraps 3 s in)
//! and sends feedback in the wire format every 50 ms, which arrives 20 ms later.

use super::feedback::build;
use super::*;
use std::collections::VecDeque;
use std::fmt::Write;

const MEDIA_PACKET: usize = 1_200;
const PADDING_PACKET: usize = 300;
const FRAME_INTERVAL: Duration = Duration::from_micros(33_333);
const PROPAGATION: Duration = Duration::from_millis(20);
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(50);
const FEEDBACK_DELAY: Duration = Duration::from_millis(20);
/// How often the wish is re-told (the shard re-plans every 200 ms).
const DESIRED_INTERVAL: Duration = Duration::from_millis(200);
/// 60 kB: 190 ms at 2.5 Mbit/s, almost 1 s at 0.5 Mbit/s.
const QUEUE_LIMIT: usize = 60_000;
/// The receiver's clock starts 3 s before its reference time wraps.
const REMOTE_CLOCK_START_US: i64 = (1 << 24) * feedback::REFERENCE_UNIT_US - 3_000_000;

struct Bottleneck {
    capacity_bps: u64,
    busy_until: Instant,
    /// (leaves the queue at, size) of the packets queued.
    queue: VecDeque<(Instant, usize)>,
    queued_bytes: usize,
    loss: f64,
    rng: u64,
}

impl Bottleneck {
    /// When the packet reaches the receiver; `None` when dropped.
    fn send(&mut self, now: Instant, size: usize) -> Option<Instant> {
        while self.queue.front().is_some_and(|(leaves, _)| *leaves <= now) {
            let (_, size) = self.queue.pop_front().unwrap();
            self.queued_bytes -= size;
        }
        if self.loss > 0.0 && self.random() < self.loss {
            return None;
        }
        if self.queued_bytes + size > QUEUE_LIMIT {
            return None;
        }
        let leaves =
            self.busy_until.max(now) + Duration::from_nanos(size as u64 * 8 * 1_000_000_000 / self.capacity_bps);
        self.busy_until = leaves;
        self.queue.push_back((leaves, size));
        self.queued_bytes += size;
        Some(leaves + PROPAGATION)
    }

    fn queue_delay(&self, now: Instant) -> Duration {
        self.busy_until.saturating_duration_since(now)
    }

    /// xorshift64: a fixed seed, the same losses every run.
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Sample {
    at: Duration,
    estimate: u64,
    queue: Duration,
    sent_bps: u64,
}

struct Sim {
    t0: Instant,
    now: Instant,
    est: SendSideEstimator,
    path: Bottleneck,
    desired: u64,
    next_frame: Instant,
    next_desired: Instant,
    /// Extended sequence number of the next packet.
    seq: u64,
    /// (arrives at, extended seq), in arrival order (the path is FIFO).
    in_flight: VecDeque<(Instant, u64)>,
    /// Arrived and not yet reported: (extended seq, arrival µs on the receiver's clock).
    arrived: Vec<(u64, i64)>,
    next_report: u64,
    next_feedback: Instant,
    feedback_count: u8,
    feedback: VecDeque<(Instant, Vec<u8>)>,
    bytes_sent: u64,
    trace: Vec<Sample>,
}

impl Sim {
    fn new(capacity_bps: u64, desired: u64, loss: f64) -> Sim {
        let t0 = Instant::now();
        let first_seq = 65_000;
        Sim {
            t0,
            now: t0,
            est: SendSideEstimator::new(600_000, t0),
            path: Bottleneck {
                capacity_bps,
                busy_until: t0,
                queue: VecDeque::new(),
                queued_bytes: 0,
                loss,
                rng: 0x2545_f491_4f6c_dd1d,
            },
            desired,
            next_frame: t0,
            next_desired: t0,
            seq: first_seq,
            in_flight: VecDeque::new(),
            arrived: Vec::new(),
            next_report: first_seq,
            next_feedback: t0 + FEEDBACK_INTERVAL,
            feedback_count: 0,
            feedback: VecDeque::new(),
            bytes_sent: 0,
            trace: Vec::new(),
        }
    }

    fn at(&self, secs: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(secs)
    }

    fn send(&mut self, size: usize, probe: Option<u32>) {
        self.est.on_packet_sent(self.seq as u16, size, probe, self.now);
        if let Some(arrival) = self.path.send(self.now, size) {
            self.in_flight.push_back((arrival, self.seq));
        }
        self.seq += 1;
        self.bytes_sent += size as u64;
    }

    /// Runs in 1 ms steps until `secs` after the start.
    fn run_until(&mut self, secs: f64) {
        let end = self.at(secs);
        while self.now < end {
            self.step();
            self.now += Duration::from_millis(1);
        }
    }

    fn step(&mut self) {
        let now = self.now;
        while self.feedback.front().is_some_and(|(at, _)| *at <= now) {
            let (_, packet) = self.feedback.pop_front().unwrap();
            self.est.on_feedback(&packet, now).expect("the simulated receiver's feedback parses");
        }
        if now >= self.next_desired {
            self.est.set_desired(self.desired, now);
            self.next_desired = now + DESIRED_INTERVAL;
        }
        if self.est.next_timeout().is_some_and(|at| at <= now) {
            self.est.handle_timeout(now);
        }
        while let Some(probe) = self.est.poll_probe(now) {
            let mut left = probe.bytes;
            while left > 0 {
                let size = left.min(PADDING_PACKET);
                self.send(size, Some(probe.cluster));
                left -= size;
            }
        }
        if now >= self.next_frame {
            let rate = self.desired.min(self.est.estimate());
            let mut left = (rate / 8 / 30) as usize;
            while left > 0 {
                let size = left.min(MEDIA_PACKET);
                self.send(size, None);
                left -= size;
            }
            self.next_frame += FRAME_INTERVAL;
        }
        while self.in_flight.front().is_some_and(|(at, _)| *at <= now) {
            let (at, seq) = self.in_flight.pop_front().unwrap();
            let remote_us = (at - self.t0).as_micros() as i64 + REMOTE_CLOCK_START_US;
            self.arrived.push((seq, remote_us));
        }
        if now >= self.next_feedback {
            self.next_feedback = now + FEEDBACK_INTERVAL;
            self.send_feedback();
        }
        if (now - self.t0).as_millis() % 100 == 0 {
            self.trace.push(Sample {
                at: now - self.t0,
                estimate: self.est.estimate(),
                queue: self.path.queue_delay(now),
                sent_bps: self.bytes_sent * 8 * 10,
            });
            self.bytes_sent = 0;
        }
    }

    /// Reports every packet from the first not reported to the last arrived.
    fn send_feedback(&mut self) {
        let Some(last) = self.arrived.iter().map(|(seq, _)| *seq).max() else { return };
        let mut statuses = vec![None; (last + 1 - self.next_report) as usize];
        for (seq, arrival) in self.arrived.drain(..) {
            statuses[(seq - self.next_report) as usize] = Some(arrival);
        }
        let packet = build::feedback(self.next_report as u16, self.feedback_count, &statuses);
        self.feedback.push_back((self.now + FEEDBACK_DELAY, packet));
        self.feedback_count = self.feedback_count.wrapping_add(1);
        self.next_report = last + 1;
    }

    /// First time at or after `from` s when the estimate met `cond`, in s.
    fn first(&self, from: f64, cond: impl Fn(&Sample) -> bool) -> Option<f64> {
        self.trace.iter().find(|s| s.at.as_secs_f64() >= from && cond(s)).map(|s| s.at.as_secs_f64())
    }

    fn samples(&self, from: f64, to: f64) -> impl Iterator<Item = &Sample> {
        self.trace.iter().filter(move |s| (from..to).contains(&s.at.as_secs_f64()))
    }

    fn mean_estimate(&self, from: f64, to: f64) -> f64 {
        let (sum, n) = self.samples(from, to).fold((0.0, 0.0), |(s, n), x| (s + x.estimate as f64, n + 1.0));
        sum / n
    }

    /// The trace every 500 ms, for failure messages.
    fn trace(&self) -> String {
        let mut out = String::from("\n   t  estimate  sent(kbit/s)  queue(ms)\n");
        for s in self.trace.iter().step_by(5) {
            let _ = writeln!(
                out,
                "{:5.1} {:8} {:8} {:6}",
                s.at.as_secs_f64(),
                s.estimate / 1000,
                s.sent_bps / 1000,
                s.queue.as_millis()
            );
        }
        out
    }
}

#[test]
fn converges_to_the_link_capacity_and_stays_under_it() {
    let mut sim = Sim::new(2_500_000, 3_000_000, 0.0);
    sim.run_until(20.0);
    let reached = sim.first(0.0, |s| s.estimate >= 1_750_000);
    assert!(reached.is_some_and(|t| t <= 10.0), "0.7 C not reached within 10 s{}", sim.trace());
    let max = sim.trace.iter().map(|s| s.estimate).max().unwrap();
    assert!(max <= 3_000_000, "above 1.2 C: {max}{}", sim.trace());
    let mean = sim.mean_estimate(10.0, 20.0);
    assert!(mean >= 1_750_000.0, "mean {mean} over 10-20 s{}", sim.trace());
    println!("reached 0.7 C at {reached:?} s, max {max}, mean 10-20 s {mean:.0}{}", sim.trace());
}

#[test]
fn probing_finds_capacity_the_media_does_not_use() {
    let mut sim = Sim::new(2_000_000, 150_000, 0.0);
    sim.run_until(5.0);
    sim.desired = 1_500_000;
    sim.run_until(12.0);
    let reached = sim.first(5.0, |s| s.estimate >= 1_200_000);
    assert!(reached.is_some_and(|t| t <= 10.0), "1.2 Mbit/s not reached within 5 s of the raise{}", sim.trace());
    println!("reached 1.2 Mbit/s at {reached:?} s (raise at 5 s){}", sim.trace());
}

#[test]
fn falls_quickly_when_capacity_drops() {
    let mut sim = Sim::new(2_500_000, 3_000_000, 0.0);
    sim.run_until(15.0);
    sim.path.capacity_bps = 500_000;
    sim.run_until(25.0);
    let fell = sim.first(15.0, |s| s.estimate < 700_000);
    assert!(fell.is_some_and(|t| t <= 17.0), "not under 0.7 Mbit/s within 2 s of the drop{}", sim.trace());
    let drained = sim.first(15.0, |s| s.queue < Duration::from_millis(300));
    let worst_after = sim.samples(19.0, 25.0).map(|s| s.queue).max().unwrap();
    assert!(worst_after < Duration::from_millis(300), "queue {worst_after:?} 4 s after the drop{}", sim.trace());
    println!("fell under 0.7 Mbit/s at {fell:?} s, queue < 300 ms at {drained:?} s (drop at 15 s){}", sim.trace());
}

#[test]
fn random_loss_does_not_hold_the_estimate_down() {
    // On an ample link, and on a link the media fills.
    for (capacity, desired) in [(10_000_000, 6_000_000), (2_500_000, 3_000_000)] {
        let mut clean = Sim::new(capacity, desired, 0.0);
        clean.run_until(20.0);
        let mut lossy = Sim::new(capacity, desired, 0.05);
        lossy.run_until(20.0);
        let (without, with) = (clean.mean_estimate(5.0, 20.0), lossy.mean_estimate(5.0, 20.0));
        assert!(
            with >= 0.7 * without,
            "C {capacity}: {with:.0} with 5% loss against {without:.0} without{}",
            lossy.trace()
        );
        println!("C {capacity}: mean 5-20 s: {without:.0} without loss, {with:.0} with 5%{}", lossy.trace());
    }
}

#[test]
fn recovers_when_capacity_returns() {
    let mut sim = Sim::new(2_500_000, 3_000_000, 0.0);
    sim.run_until(10.0);
    sim.path.capacity_bps = 500_000;
    sim.run_until(20.0);
    sim.path.capacity_bps = 2_500_000;
    sim.run_until(36.0);
    let recovered = sim.first(20.0, |s| s.estimate >= 1_500_000);
    assert!(recovered.is_some_and(|t| t <= 35.0), "not at 1.5 Mbit/s within 15 s of the recovery{}", sim.trace());
    println!("back at 1.5 Mbit/s at {recovered:?} s (recovery at 20 s){}", sim.trace());
}
