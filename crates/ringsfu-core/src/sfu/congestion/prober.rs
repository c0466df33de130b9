//! Paces probe clusters: each cluster goes out in 5 ms steps over 25 ms, at its target rate,
//! the next one 20 ms after (libwebrtc's BitrateProber sends clusters of at least 15 ms; a few
//! steps give the receive spacing enough packets to measure). As in libwebrtc, media sent while
//! a cluster is going out belongs to it: the padding of each step is what the media left to
//! reach the target, and the cluster measures the path with both.

use super::ProbeSend;
use smallvec::SmallVec;
use std::time::{Duration, Instant};

pub const STEP: Duration = Duration::from_millis(5);
const STEPS: u32 = 5;
const GAP: Duration = Duration::from_millis(20);
/// Steps smaller than this would be one tiny packet.
const MIN_STEP_BYTES: usize = 300;
/// Clusters waiting; more requests are refused (they come from one chain at a time).
const MAX_QUEUED: usize = 4;

#[derive(Debug, Clone, Copy)]
struct Queued {
    cluster: u32,
    step_bytes: usize,
    steps_left: u32,
}

#[derive(Debug)]
pub struct Prober {
    queue: SmallVec<[Queued; MAX_QUEUED]>,
    next_step: Option<Instant>,
    next_cluster: u32,
    /// The cluster going out: between its first step and its last.
    active: Option<u32>,
    /// Media bytes sent during the active cluster not yet deducted from its padding.
    media_credit: usize,
}

/// One step handed out; `last` when it ends its cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub send: ProbeSend,
    pub last: bool,
}

impl Default for Prober {
    fn default() -> Prober {
        Prober { queue: SmallVec::new(), next_step: None, next_cluster: 1, active: None, media_credit: 0 }
    }
}

impl Prober {
    /// Queues a cluster at `target_bps`; its id, or `None` when the queue is full.
    pub fn enqueue(&mut self, target_bps: u64, now: Instant) -> Option<u32> {
        if self.queue.len() == MAX_QUEUED {
            return None;
        }
        let cluster = self.next_cluster;
        self.next_cluster = self.next_cluster.checked_add(1).unwrap_or(1);
        let step_bytes = ((target_bps as f64 * STEP.as_secs_f64() / 8.0) as usize).max(MIN_STEP_BYTES);
        self.queue.push(Queued { cluster, step_bytes, steps_left: STEPS });
        self.next_step.get_or_insert(now);
        Some(cluster)
    }

    pub fn next_step(&self) -> Option<Instant> {
        self.next_step
    }

    /// The cluster media sent now belongs to.
    pub fn active(&self) -> Option<u32> {
        self.active
    }

    /// Media of `size` bytes went out during the active cluster.
    pub fn on_media(&mut self, size: usize) {
        if self.active.is_some() {
            self.media_credit += size;
        }
    }

    /// The step due now, if any; its bytes may be 0 when media filled it.
    pub fn poll(&mut self, now: Instant) -> Option<Step> {
        if self.next_step.is_none_or(|at| at > now) {
            return None;
        }
        let front = self.queue.first_mut()?;
        if self.active != Some(front.cluster) {
            self.active = Some(front.cluster);
            self.media_credit = 0;
        }
        front.steps_left -= 1;
        let deducted = self.media_credit.min(front.step_bytes);
        self.media_credit -= deducted;
        let send = ProbeSend { cluster: front.cluster, bytes: front.step_bytes - deducted };
        let last = front.steps_left == 0;
        if last {
            self.queue.remove(0);
            self.active = None;
            self.next_step = (!self.queue.is_empty()).then_some(now + GAP);
        } else {
            self.next_step = Some(now + STEP);
        }
        Some(Step { send, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paces_each_cluster_in_steps_then_the_next_after_a_gap() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        assert_eq!(p.poll(t0), None);
        let a = p.enqueue(1_600_000, t0).unwrap();
        let b = p.enqueue(3_200_000, t0).unwrap();
        let mut at = t0;
        let mut steps = Vec::new();
        while let Some(next) = p.next_step() {
            at = at.max(next);
            assert_eq!(p.poll(at - Duration::from_micros(1)), None, "not before its time");
            steps.push((at - t0, p.poll(at).unwrap()));
            assert_eq!(p.poll(at), None, "one step at a time");
        }
        let ms = |m| Duration::from_millis(m);
        let first: Vec<_> =
            steps.iter().filter(|(_, s)| s.send.cluster == a).map(|(t, s)| (*t, s.send.bytes)).collect();
        assert_eq!(first, vec![(ms(0), 1_000), (ms(5), 1_000), (ms(10), 1_000), (ms(15), 1_000), (ms(20), 1_000)]);
        let second: Vec<_> = steps.iter().filter(|(_, s)| s.send.cluster == b).map(|(t, _)| *t).collect();
        assert_eq!(second, vec![ms(40), ms(45), ms(50), ms(55), ms(60)]);
        assert_eq!(steps.iter().filter(|(_, s)| s.last).count(), 2);
    }

    #[test]
    fn media_sent_during_a_cluster_counts_towards_it() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        let id = p.enqueue(1_600_000, t0).unwrap();
        p.on_media(5_000);
        assert_eq!(p.active(), None, "media before the cluster is not part of it");
        assert_eq!(p.poll(t0).unwrap().send.bytes, 1_000);
        assert_eq!(p.active(), Some(id));
        p.on_media(1_500);
        assert_eq!(p.poll(t0 + STEP).unwrap().send.bytes, 0);
        assert_eq!(p.poll(t0 + 2 * STEP).unwrap().send.bytes, 500);
        p.poll(t0 + 3 * STEP);
        assert!(p.poll(t0 + 4 * STEP).unwrap().last);
        assert_eq!(p.active(), None);
    }

    #[test]
    fn a_full_queue_refuses_more() {
        let t0 = Instant::now();
        let mut p = Prober::default();
        for _ in 0..MAX_QUEUED {
            assert!(p.enqueue(1_000_000, t0).is_some());
        }
        assert_eq!(p.enqueue(1_000_000, t0), None);
    }
}
