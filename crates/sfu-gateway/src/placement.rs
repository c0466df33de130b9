//! Where channels went: `iss` → SFU (sticky placement, so a retried or repeated `/v1/channel`
//! lands where the channel already is) and channel uuid → SFU (so `/v1/disconnect` reaches the SFU
//! that holds the channel).
//!
//! An `iss` is reserved for an SFU as soon as a request is sent there, before the answer: a
//! second request for the same `iss` arriving meanwhile goes to the same SFU, which returns the
//! same channel instead of a duplicate on another SFU. A failed attempt releases its reservation.
//! Entries expire: issuers after the sticky TTL (refreshed by each request), channels after the
//! channel TTL (calls can last hours; an expired channel only makes a disconnect go to every SFU).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An SFU's identity across reloads: its address.
pub type NodeKey = Arc<str>;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Placement {
    node: NodeKey,
    /// False while the first request to `node` is in flight.
    confirmed: bool,
    expires: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    node: NodeKey,
    expires: Instant,
}

/// Placements with their time left: (issuer or channel, node, time left).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub issuers: Vec<(String, NodeKey, Duration)>,
    pub channels: Vec<(String, NodeKey, Duration)>,
}

#[derive(Debug)]
pub struct Placements {
    by_issuer: HashMap<String, Placement>,
    by_channel: HashMap<String, Holder>,
    sticky_ttl: Duration,
    channel_ttl: Duration,
}

impl Placements {
    pub fn new(sticky_ttl: Duration, channel_ttl: Duration) -> Placements {
        Placements { by_issuer: HashMap::new(), by_channel: HashMap::new(), sticky_ttl, channel_ttl }
    }

    pub fn set_ttls(&mut self, sticky_ttl: Duration, channel_ttl: Duration) {
        self.sticky_ttl = sticky_ttl;
        self.channel_ttl = channel_ttl;
    }

    /// The SFU `issuer` was placed on (or is being placed on), unless expired.
    pub fn sticky(&self, issuer: &str, now: Instant) -> Option<&NodeKey> {
        self.by_issuer.get(issuer).filter(|p| p.expires > now).map(|p| &p.node)
    }

    /// The SFU holding `issuer`'s channel, once an SFU answered with one (not a mere reservation).
    pub fn confirmed(&self, issuer: &str, now: Instant) -> Option<&NodeKey> {
        self.by_issuer.get(issuer).filter(|p| p.confirmed && p.expires > now).map(|p| &p.node)
    }

    /// A request for `issuer` is being sent to `node`. A confirmed placement on the same node
    /// stays confirmed (a repeat of a known channel).
    pub fn reserve(&mut self, issuer: &str, node: &NodeKey, now: Instant) {
        let expires = now + self.sticky_ttl;
        match self.by_issuer.get_mut(issuer) {
            Some(p) if p.node == *node && p.expires > now => p.expires = expires,
            _ => {
                self.by_issuer.insert(issuer.to_string(), Placement { node: node.clone(), confirmed: false, expires });
            }
        }
    }

    /// The request to `node` failed: forget the reservation unless a confirmed placement or
    /// another node's reservation has replaced it.
    pub fn release(&mut self, issuer: &str, node: &NodeKey) {
        if self.by_issuer.get(issuer).is_some_and(|p| p.node == *node && !p.confirmed) {
            self.by_issuer.remove(issuer);
        }
    }

    /// `node` answered with `channel` for `issuer`. Returns whether the channel is new here (not
    /// held by that node before: a repeat of a known channel is not).
    pub fn confirm(&mut self, issuer: &str, node: &NodeKey, channel: &str, now: Instant) -> bool {
        // The entries usually exist (the reservation, a repeated channel): updated in place,
        // their keys are not allocated again.
        let placement = Placement { node: node.clone(), confirmed: true, expires: now + self.sticky_ttl };
        match self.by_issuer.get_mut(issuer) {
            Some(p) => *p = placement,
            None => {
                self.by_issuer.insert(issuer.to_string(), placement);
            }
        }
        let holder = Holder { node: node.clone(), expires: now + self.channel_ttl };
        match self.by_channel.get_mut(channel) {
            Some(h) => {
                let new = h.node != *node || h.expires <= now;
                *h = holder;
                new
            }
            None => {
                self.by_channel.insert(channel.to_string(), holder);
                true
            }
        }
    }

    /// The SFU holding `channel`, if known and not expired.
    pub fn holder(&self, channel: &str, now: Instant) -> Option<&NodeKey> {
        self.by_channel.get(channel).filter(|h| h.expires > now).map(|h| &h.node)
    }

    /// Another gateway placed `issuer` on `node` (read from the shared store): a known channel
    /// there, unless this gateway already has `issuer` on that node.
    pub fn adopt(&mut self, issuer: &str, node: &NodeKey, now: Instant) {
        if self.sticky(issuer, now) != Some(node) {
            let expires = now + self.sticky_ttl;
            self.by_issuer.insert(issuer.to_string(), Placement { node: node.clone(), confirmed: true, expires });
        }
    }

    /// Another gateway learned that `node` holds `channel`.
    pub fn adopt_channel(&mut self, channel: &str, node: &NodeKey, now: Instant) {
        let expires = now + self.channel_ttl;
        self.by_channel.insert(channel.to_string(), Holder { node: node.clone(), expires });
    }

    /// Confirmed, unexpired placements with the time each has left: what a reconciliation with the
    /// shared store re-writes.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let left = |expires: Instant| expires.saturating_duration_since(now);
        Snapshot {
            issuers: (self.by_issuer.iter())
                .filter(|(_, p)| p.confirmed && p.expires > now)
                .map(|(issuer, p)| (issuer.clone(), p.node.clone(), left(p.expires)))
                .collect(),
            channels: (self.by_channel.iter())
                .filter(|(_, h)| h.expires > now)
                .map(|(channel, h)| (channel.clone(), h.node.clone(), left(h.expires)))
                .collect(),
        }
    }

    /// Drops expired entries.
    pub fn sweep(&mut self, now: Instant) {
        self.by_issuer.retain(|_, p| p.expires > now);
        self.by_channel.retain(|_, h| h.expires > now);
        // After a burst has expired, give the tables' memory back (with room to grow again).
        shrink(&mut self.by_issuer);
        shrink(&mut self.by_channel);
    }

    /// Confirmed, unexpired issuer placements per node.
    pub fn count_by_node(&self, now: Instant) -> HashMap<NodeKey, usize> {
        let mut counts = HashMap::new();
        for p in self.by_issuer.values().filter(|p| p.confirmed && p.expires > now) {
            *counts.entry(p.node.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Bytes one placed channel costs (its issuer entry and its channel entry), by construction:
    /// the hash-table slots (entry and control byte) and the two keys' heap blocks (glibc:
    /// 8 bytes of header, 16-byte granularity, 32 at least). A table is at most 7/8 full, so the
    /// slots cost up to 8/7 of this, and up to twice that just after the table doubled.
    pub fn bytes_per_entry(issuer_len: usize, channel_len: usize) -> usize {
        let heap = |len: usize| ((len + 8 + 15) & !15).max(32);
        let slot = |entry: usize| entry + 1;
        slot(size_of::<(String, Placement)>())
            + slot(size_of::<(String, Holder)>())
            + heap(issuer_len)
            + heap(channel_len)
    }

    /// Entries held (issuers, channels), expired ones included until the next sweep.
    pub fn len(&self) -> (usize, usize) {
        (self.by_issuer.len(), self.by_channel.len())
    }
}

/// Shrinks a table that is less than a quarter full to twice its length.
fn shrink<V>(table: &mut HashMap<String, V>) {
    if table.len() * 4 < table.capacity() {
        table.shrink_to(table.len() * 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn key(s: &str) -> NodeKey {
        Arc::from(s)
    }

    #[test]
    fn a_confirmed_issuer_sticks_until_its_ttl_and_each_request_refreshes_it() {
        let t0 = Instant::now();
        let (a, b) = (key("http://a"), key("http://b"));
        let mut p = Placements::new(10 * MIN, 60 * MIN);
        p.reserve("odoo:channel:1", &a, t0);
        assert!(p.confirm("odoo:channel:1", &a, "uuid-1", t0), "a new channel");
        assert_eq!(p.sticky("odoo:channel:1", t0 + 9 * MIN), Some(&a));
        assert_eq!(p.sticky("odoo:channel:1", t0 + 10 * MIN), None, "expired at the TTL");
        assert_eq!(p.sticky("odoo:channel:2", t0), None);

        // A repeat at 9 minutes extends the placement by another TTL.
        p.reserve("odoo:channel:1", &a, t0 + 9 * MIN);
        assert!(!p.confirm("odoo:channel:1", &a, "uuid-1", t0 + 9 * MIN), "a repeat of the channel");
        assert_eq!(p.sticky("odoo:channel:1", t0 + 18 * MIN), Some(&a));

        // Moving to another SFU (the first one failed) replaces the placement.
        assert!(p.confirm("odoo:channel:1", &b, "uuid-2", t0 + 10 * MIN));
        assert_eq!(p.sticky("odoo:channel:1", t0 + 10 * MIN), Some(&b));
        assert_eq!(p.holder("uuid-1", t0 + 10 * MIN), Some(&a), "the old channel still lives on a");
        assert_eq!(p.holder("uuid-2", t0 + 10 * MIN), Some(&b));
    }

    #[test]
    fn a_reservation_routes_concurrent_requests_and_a_failure_releases_it() {
        let t0 = Instant::now();
        let (a, b) = (key("http://a"), key("http://b"));
        let mut p = Placements::new(10 * MIN, 60 * MIN);
        p.reserve("iss", &a, t0);
        assert_eq!(p.sticky("iss", t0), Some(&a), "a concurrent request follows the reservation");
        assert_eq!(p.count_by_node(t0).get(&a), None, "not counted until confirmed");
        assert_eq!(p.confirmed("iss", t0), None);

        // A failure on a releases only a's own unconfirmed reservation.
        p.release("iss", &b);
        assert_eq!(p.sticky("iss", t0), Some(&a));
        p.release("iss", &a);
        assert_eq!(p.sticky("iss", t0), None);

        // A failed repeat never releases a confirmed placement.
        p.confirm("iss", &a, "uuid", t0);
        p.reserve("iss", &a, t0);
        assert_eq!(p.confirmed("iss", t0), Some(&a));
        p.release("iss", &a);
        assert_eq!(p.sticky("iss", t0), Some(&a));
    }

    #[test]
    fn adopted_placements_are_confirmed_and_snapshots_skip_reservations() {
        let t0 = Instant::now();
        let (a, b) = (key("http://a"), key("http://b"));
        let mut p = Placements::new(10 * MIN, 60 * MIN);
        p.reserve("mine", &a, t0);
        p.adopt("theirs", &b, t0);
        p.adopt_channel("uuid-b", &b, t0);
        assert_eq!(p.confirmed("theirs", t0), Some(&b), "a repeat of a channel another gateway placed");
        assert_eq!(p.holder("uuid-b", t0), Some(&b));
        // Adopting where this gateway already is keeps its own entry (a reservation stays one).
        p.adopt("mine", &a, t0);
        assert_eq!(p.confirmed("mine", t0), None);
        p.adopt("mine", &b, t0);
        assert_eq!(p.confirmed("mine", t0), Some(&b), "the shared store's winner replaces a local guess");

        let snapshot = p.snapshot(t0 + MIN);
        let mut issuers: Vec<(&str, &str, Duration)> =
            snapshot.issuers.iter().map(|(i, n, left)| (i.as_str(), &**n, *left)).collect();
        issuers.sort();
        assert_eq!(issuers, vec![("mine", "http://b", 9 * MIN), ("theirs", "http://b", 9 * MIN)]);
        assert_eq!(snapshot.channels.len(), 1);
    }

    #[test]
    fn channels_outlive_the_sticky_ttl_and_sweeping_drops_what_expired() {
        let t0 = Instant::now();
        let a = key("http://a");
        let mut p = Placements::new(10 * MIN, 60 * MIN);
        p.confirm("iss-1", &a, "uuid-1", t0);
        p.confirm("iss-2", &a, "uuid-2", t0 + 30 * MIN);
        assert_eq!(p.count_by_node(t0 + 31 * MIN).get(&a), Some(&1));
        assert_eq!(p.holder("uuid-1", t0 + 59 * MIN), Some(&a));
        p.sweep(t0 + 60 * MIN);
        assert_eq!(p.len(), (0, 1));
        assert_eq!(p.holder("uuid-1", t0 + 60 * MIN), None);
        assert_eq!(p.holder("uuid-2", t0 + 60 * MIN), Some(&a));
    }

    #[test]
    fn a_burst_that_expired_gives_its_memory_back() {
        let t0 = Instant::now();
        let a = key("http://a");
        let mut p = Placements::new(10 * MIN, 60 * MIN);
        for i in 0..1000 {
            p.confirm(&format!("iss-{i}"), &a, &format!("uuid-{i}"), t0);
        }
        p.confirm("late", &a, "uuid-late", t0 + 30 * MIN);
        p.sweep(t0 + 20 * MIN);
        assert_eq!(p.len(), (1, 1001), "issuers expired, channels not yet");
        assert!(p.by_issuer.capacity() < 8, "{}", p.by_issuer.capacity());
        assert!(p.by_channel.capacity() >= 1001);
        p.sweep(t0 + 60 * MIN);
        assert_eq!(p.len(), (0, 1));
        assert!(p.by_channel.capacity() < 8, "{}", p.by_channel.capacity());
        assert_eq!(p.holder("uuid-late", t0 + 60 * MIN), Some(&a));
    }
}
