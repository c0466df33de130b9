//! One deadline table per shard: every str0m `Rtc` timeout and every protocol timer of the shard
//! lives here, instead of one timer task per object.
//!
//! Each key has at most one deadline (the shape of quinn-proto's `TimerTable`, for many owners):
//! scheduling a key that is already armed moves its deadline in place. An `Rtc` moves its
//! deadline after nearly every packet, and a heap that only ever pushed would fill with stale
//! entries that each cost a pop. This is an indexed binary min-heap: a map from key to heap slot
//! makes a move O(log n) and keeps the table at one entry per live key.

use super::demux::FastMap;
use std::hash::Hash;
use std::time::Instant;

pub struct Timers<K> {
    /// A binary min-heap on (deadline, arming order): equal deadlines fire in the order armed.
    heap: Vec<Entry<K>>,
    /// Where each armed key sits in `heap` (keys are ours, never a peer's: a fast hash is safe).
    slots: FastMap<K, usize>,
    seq: u64,
}

struct Entry<K> {
    at: Instant,
    seq: u64,
    key: K,
}

impl<K> Entry<K> {
    fn before(&self, other: &Entry<K>) -> bool {
        (self.at, self.seq) < (other.at, other.seq)
    }
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            heap: Vec::with_capacity(1024),
            slots: FastMap::with_capacity_and_hasher(1024, Default::default()),
            seq: 0,
        }
    }
}

impl<K: Copy + Eq + Hash> Timers<K> {
    /// Arms `key` at `at`, replacing the deadline it had.
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.seq += 1;
        let seq = self.seq;
        match self.slots.get(&key) {
            Some(&i) => {
                if self.heap[i].at == at {
                    return;
                }
                self.heap[i].at = at;
                self.heap[i].seq = seq;
                self.restore(i);
            }
            None => {
                self.heap.push(Entry { at, seq, key });
                let i = self.heap.len() - 1;
                self.slots.insert(key, i);
                self.sift_up(i);
            }
        }
    }

    /// Disarms `key`; nothing happens if it was not armed.
    pub fn cancel(&mut self, key: K) {
        if let Some(i) = self.slots.remove(&key) {
            self.remove_at(i);
        }
    }

    /// The deadline `key` is armed at.
    pub fn deadline(&self, key: K) -> Option<Instant> {
        self.slots.get(&key).map(|&i| self.heap[i].at)
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.heap.first().map(|e| e.at)
    }

    /// Disarms and returns one key due at `now`, earliest first.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        let first = self.heap.first()?;
        if first.at > now {
            return None;
        }
        let (at, key) = (first.at, first.key);
        self.slots.remove(&key);
        self.remove_at(0);
        Some((at, key))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Removes the entry at heap slot `i` (its key is already out of `slots`).
    fn remove_at(&mut self, i: usize) {
        let last = self.heap.len() - 1;
        if i != last {
            self.heap.swap(i, last);
            self.slots.insert(self.heap[i].key, i);
        }
        self.heap.pop();
        if i < self.heap.len() {
            self.restore(i);
        }
    }

    /// Moves the entry at `i` up or down until the heap holds again.
    fn restore(&mut self, i: usize) {
        if i > 0 && self.heap[i].before(&self.heap[(i - 1) / 2]) {
            self.sift_up(i);
        } else {
            self.sift_down(i);
        }
    }

    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let parent = (i - 1) / 2;
            if !self.heap[i].before(&self.heap[parent]) {
                break;
            }
            self.swap(i, parent);
            i = parent;
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        loop {
            let (left, right) = (2 * i + 1, 2 * i + 2);
            let mut smallest = i;
            if left < self.heap.len() && self.heap[left].before(&self.heap[smallest]) {
                smallest = left;
            }
            if right < self.heap.len() && self.heap[right].before(&self.heap[smallest]) {
                smallest = right;
            }
            if smallest == i {
                break;
            }
            self.swap(i, smallest);
            i = smallest;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        *self.slots.get_mut(&self.heap[a].key).expect("armed keys have a slot") = a;
        *self.slots.get_mut(&self.heap[b].key).expect("armed keys have a slot") = b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;
    use std::time::Duration;

    fn drain<K: Copy + Eq + Hash>(t: &mut Timers<K>, now: Instant) -> Vec<K> {
        let mut got = Vec::new();
        while let Some((_, k)) = t.pop_due(now) {
            got.push(k);
        }
        got
    }

    #[test]
    fn pops_in_deadline_order_then_arming_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(t0 + Duration::from_millis(5), "b");
        t.schedule(t0 + Duration::from_millis(1), "a");
        t.schedule(t0 + Duration::from_millis(5), "c");
        t.schedule(t0 + Duration::from_millis(9), "d");
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(1)));
        assert_eq!(drain(&mut t, t0 + Duration::from_millis(5)), vec!["a", "b", "c"]);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn rescheduling_a_key_moves_its_one_deadline() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut t = Timers::default();
        t.schedule(ms(10), 1);
        t.schedule(ms(20), 2);
        // Earlier, later, and the same again: still one entry per key.
        t.schedule(ms(30), 1);
        t.schedule(ms(5), 2);
        t.schedule(ms(5), 2);
        assert_eq!(t.len(), 2);
        assert_eq!(t.deadline(1), Some(ms(30)));
        assert_eq!(drain(&mut t, ms(10)), vec![2]);
        t.cancel(1);
        t.cancel(7);
        assert!(t.is_empty());
        assert_eq!(drain(&mut t, ms(100)), Vec::<i32>::new());
    }

    #[test]
    fn agrees_with_a_sorted_model_under_random_operations() {
        let t0 = Instant::now();
        let mut rng = StdRng::seed_from_u64(9);
        let mut t = Timers::default();
        let mut model: HashMap<u32, (Instant, u64)> = HashMap::new();
        let mut seq = 0u64;
        let mut now = t0;
        for _ in 0..20_000 {
            let key = rng.random_range(0..200u32);
            match rng.random_range(0..10) {
                0..=5 => {
                    let at = now + Duration::from_micros(rng.random_range(0..5_000));
                    t.schedule(at, key);
                    seq += 1;
                    match model.get_mut(&key) {
                        Some(e) if e.0 == at => {}
                        Some(e) => *e = (at, seq),
                        None => {
                            model.insert(key, (at, seq));
                        }
                    }
                }
                6 => {
                    t.cancel(key);
                    model.remove(&key);
                }
                _ => {
                    now += Duration::from_micros(rng.random_range(0..1_000));
                    let mut due: Vec<(Instant, u64, u32)> =
                        model.iter().filter(|(_, e)| e.0 <= now).map(|(k, e)| (e.0, e.1, *k)).collect();
                    due.sort();
                    for (_, _, k) in &due {
                        model.remove(k);
                    }
                    let expected: Vec<u32> = due.into_iter().map(|(_, _, k)| k).collect();
                    assert_eq!(drain(&mut t, now), expected);
                }
            }
            assert_eq!(t.len(), model.len());
            assert_eq!(t.next(), model.values().map(|e| e.0).min());
        }
    }
}
