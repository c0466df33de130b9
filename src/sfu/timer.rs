//! One deadline table per shard: every str0m `Rtc` timeout and every protocol timer of the shard
//! lives here, instead of one timer task per object.
//!
//! Entries are never removed early: an owner that no longer wants a deadline simply ignores it
//! when it fires (each owner remembers the deadline it asked for).

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

struct Entry<K> {
    at: Instant,
    seq: u64,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.seq == other.seq
    }
}
impl<K> Eq for Entry<K> {}
impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub struct Timers<K> {
    heap: BinaryHeap<Reverse<Entry<K>>>,
    seq: u64,
}

impl<K> Default for Timers<K> {
    fn default() -> Self {
        Timers { heap: BinaryHeap::with_capacity(1024), seq: 0 }
    }
}

impl<K> Timers<K> {
    pub fn schedule(&mut self, at: Instant, key: K) {
        self.seq += 1;
        self.heap.push(Reverse(Entry { at, seq: self.seq, key }));
    }

    /// The earliest deadline, stale or not.
    pub fn next(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Pops one entry due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Instant, K)> {
        if self.heap.peek()?.0.at > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| (e.at, e.key))
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_order_then_insertion_order() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.schedule(t0 + Duration::from_millis(5), "b");
        t.schedule(t0 + Duration::from_millis(1), "a");
        t.schedule(t0 + Duration::from_millis(5), "c");
        t.schedule(t0 + Duration::from_millis(9), "d");
        assert_eq!(t.next(), Some(t0 + Duration::from_millis(1)));
        let now = t0 + Duration::from_millis(5);
        let mut got = Vec::new();
        while let Some((_, k)) = t.pop_due(now) {
            got.push(k);
        }
        assert_eq!(got, vec!["a", "b", "c"]);
        assert_eq!(t.len(), 1);
    }
}
