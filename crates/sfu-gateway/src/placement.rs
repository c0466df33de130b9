//! Where channels went: `iss` → SFU (sticky placement, so a retried or repeated `/v1/channel`
//! lands where the channel already is) and channel uuid → SFU (so `/v1/disconnect` reaches the SFU
//! that holds the channel).
//!
//! An `iss` is reserved for an SFU as soon as a request is sent there, before the answer: a
//! second request for the same `iss` arriving meanwhile goes to the same SFU, which returns the
//! same channel instead of a duplicate on another SFU. A failed attempt releases its reservation.
//! Entries expire: issuers after the sticky TTL (refreshed by each request), channels after the
//! channel TTL (calls can last hours; an expired channel only makes a disconnect go to every SFU).

use std::collections::HashMap as StdHashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// hashbrown with foldhash: a fraction of SipHash's cost on these short keys, and `entry_ref`
/// allocates an issuer's key only when it is new. The keys are `iss` claims of tokens the gateway
/// verified and uuids its SFUs made, not strings an attacker chooses to collide.
type Table<K, V> = hashbrown::HashMap<K, V>;

/// An SFU's identity across reloads: its address.
pub type NodeKey = Arc<str>;

/// A placement costs its table slots and its keys' memory, and a busy gateway places tens of
/// thousands a minute: the entries are kept small (a node as an index into [`Nodes`], a time as
/// 8 bytes, a uuid as its 16 bytes) so that a placement is about half what `String` keys, `Arc`
/// nodes and `Instant`s cost (docs/performance.md, "Gateway alone").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Placement {
    expires: Stamp,
    node: NodeId,
    /// False while the first request to `node` is in flight.
    confirmed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Holder {
    expires: Stamp,
    node: NodeId,
}

/// A time as nanoseconds from the tables' epoch (negative before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Stamp(i64);

impl Stamp {
    /// `ttl` after this.
    fn after(self, ttl: Duration) -> Stamp {
        Stamp(self.0.saturating_add(i64::try_from(ttl.as_nanos()).unwrap_or(i64::MAX)))
    }

    /// The time from `now` to this (zero once past).
    fn left(self, now: Stamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(now.0).max(0) as u64)
    }
}

/// A node's index in [`Nodes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NodeId(u32);

/// The addresses entries point at. Small (the fleet, plus SFUs gone since the last sweep), so a
/// scan finds one; a sweep drops those no entry points at.
#[derive(Debug, Default)]
struct Nodes(Vec<NodeKey>);

impl Nodes {
    fn find(&self, node: &NodeKey) -> Option<NodeId> {
        // The registry hands out the same `Arc`s: the pointer usually matches before the text.
        let at = self.0.iter().position(|n| Arc::ptr_eq(n, node)).or_else(|| self.0.iter().position(|n| n == node))?;
        Some(NodeId(at as u32))
    }

    fn id(&mut self, node: &NodeKey) -> NodeId {
        self.find(node).unwrap_or_else(|| {
            self.0.push(node.clone());
            NodeId(self.0.len() as u32 - 1)
        })
    }

    fn key(&self, id: NodeId) -> &NodeKey {
        &self.0[id.0 as usize]
    }
}

/// A channel's uuid as its 16 bytes when it is one in the usual text form (lowercase, with
/// hyphens: what ringsfu and Odoo's SFU make), so that it needs no allocation; any other text as
/// it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ChannelKey {
    Uuid(uuid::Bytes),
    Text(Box<str>),
}

impl ChannelKey {
    fn of(channel: &str) -> ChannelKey {
        // 36 characters that parse as a uuid are its hyphenated form; in lower case, that text is
        // what `Display` gives back.
        let canonical = channel.len() == 36 && !channel.bytes().any(|b| b.is_ascii_uppercase());
        if canonical && let Ok(uuid) = uuid::Uuid::try_parse(channel) {
            return ChannelKey::Uuid(uuid.into_bytes());
        }
        ChannelKey::Text(channel.into())
    }
}

impl fmt::Display for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChannelKey::Uuid(bytes) => uuid::Uuid::from_bytes(*bytes).hyphenated().fmt(f),
            ChannelKey::Text(text) => f.write_str(text),
        }
    }
}

/// Placements with their time left: (issuer or channel, node, time left).
#[derive(Debug, Default)]
pub struct Snapshot {
    pub issuers: Vec<(String, NodeKey, Duration)>,
    pub channels: Vec<(String, NodeKey, Duration)>,
}

#[derive(Debug)]
pub struct Placements {
    by_issuer: Table<Box<str>, Placement>,
    by_channel: Table<ChannelKey, Holder>,
    nodes: Nodes,
    epoch: Instant,
    sticky_ttl: Duration,
    channel_ttl: Duration,
}

impl Placements {
    pub fn new(sticky_ttl: Duration, channel_ttl: Duration) -> Placements {
        Placements {
            by_issuer: Table::default(),
            by_channel: Table::default(),
            nodes: Nodes::default(),
            epoch: Instant::now(),
            sticky_ttl,
            channel_ttl,
        }
    }

    pub fn set_ttls(&mut self, sticky_ttl: Duration, channel_ttl: Duration) {
        self.sticky_ttl = sticky_ttl;
        self.channel_ttl = channel_ttl;
    }

    fn stamp(&self, at: Instant) -> Stamp {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match at.checked_duration_since(self.epoch) {
            Some(after) => Stamp(nanos(after)),
            None => Stamp(-nanos(self.epoch.duration_since(at))),
        }
    }

    /// The SFU `issuer` was placed on (or is being placed on), unless expired.
    pub fn sticky(&self, issuer: &str, now: Instant) -> Option<&NodeKey> {
        let now = self.stamp(now);
        self.by_issuer.get(issuer).filter(|p| p.expires > now).map(|p| self.nodes.key(p.node))
    }

    /// The SFU holding `issuer`'s channel, once an SFU answered with one (not a mere reservation).
    /// For the tests: a request learns it from [`Placements::reserve`].
    #[cfg(test)]
    fn confirmed(&self, issuer: &str, now: Instant) -> Option<&NodeKey> {
        let now = self.stamp(now);
        self.by_issuer.get(issuer).filter(|p| p.confirmed && p.expires > now).map(|p| self.nodes.key(p.node))
    }

    /// A request for `issuer` is being sent to `node`. A confirmed placement on the same node
    /// stays confirmed; returns whether there was one (a repeat of a known channel).
    pub fn reserve(&mut self, issuer: &str, node: &NodeKey, now: Instant) -> bool {
        let (node, stamp) = (self.nodes.id(node), self.stamp(now));
        let expires = stamp.after(self.sticky_ttl);
        let fresh = Placement { expires, node, confirmed: false };
        let mut repeat = false;
        self.by_issuer
            .entry_ref(issuer)
            .and_modify(|p| {
                if p.node == node && p.expires > stamp {
                    repeat = p.confirmed;
                    p.expires = expires;
                } else {
                    *p = fresh;
                }
            })
            .or_insert(fresh);
        repeat
    }

    /// The request to `node` failed: forget the reservation unless a confirmed placement or
    /// another node's reservation has replaced it.
    pub fn release(&mut self, issuer: &str, node: &NodeKey) {
        let Some(node) = self.nodes.find(node) else { return };
        if self.by_issuer.get(issuer).is_some_and(|p| p.node == node && !p.confirmed) {
            self.by_issuer.remove(issuer);
        }
    }

    /// `node` answered with `channel` for `issuer`. Returns whether the channel is new here (not
    /// held by that node before: a repeat of a known channel is not).
    pub fn confirm(&mut self, issuer: &str, node: &NodeKey, channel: &str, now: Instant) -> bool {
        let (node, stamp) = (self.nodes.id(node), self.stamp(now));
        let placement = Placement { expires: stamp.after(self.sticky_ttl), node, confirmed: true };
        self.by_issuer.entry_ref(issuer).and_modify(|p| *p = placement).or_insert(placement);
        let holder = Holder { expires: stamp.after(self.channel_ttl), node };
        match self.by_channel.entry(ChannelKey::of(channel)) {
            hashbrown::hash_map::Entry::Occupied(mut held) => {
                let new = held.get().node != node || held.get().expires <= stamp;
                held.insert(holder);
                new
            }
            hashbrown::hash_map::Entry::Vacant(free) => {
                free.insert(holder);
                true
            }
        }
    }

    /// The SFU holding `channel`, if known and not expired.
    pub fn holder(&self, channel: &str, now: Instant) -> Option<&NodeKey> {
        let now = self.stamp(now);
        self.by_channel.get(&ChannelKey::of(channel)).filter(|h| h.expires > now).map(|h| self.nodes.key(h.node))
    }

    /// Another gateway placed `issuer` on `node` (read from the shared store): a known channel
    /// there, unless this gateway already has `issuer` on that node.
    pub fn adopt(&mut self, issuer: &str, node: &NodeKey, now: Instant) {
        if self.sticky(issuer, now) != Some(node) {
            let placement = Placement {
                expires: self.stamp(now).after(self.sticky_ttl),
                node: self.nodes.id(node),
                confirmed: true,
            };
            self.by_issuer.insert(issuer.into(), placement);
        }
    }

    /// Another gateway learned that `node` holds `channel`.
    pub fn adopt_channel(&mut self, channel: &str, node: &NodeKey, now: Instant) {
        let holder = Holder { expires: self.stamp(now).after(self.channel_ttl), node: self.nodes.id(node) };
        self.by_channel.insert(ChannelKey::of(channel), holder);
    }

    /// Confirmed, unexpired placements with the time each has left: what a reconciliation with the
    /// shared store re-writes.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let stamp = self.stamp(now);
        Snapshot {
            issuers: (self.by_issuer.iter())
                .filter(|(_, p)| p.confirmed && p.expires > stamp)
                .map(|(issuer, p)| (issuer.to_string(), self.nodes.key(p.node).clone(), p.expires.left(stamp)))
                .collect(),
            channels: (self.by_channel.iter())
                .filter(|(_, h)| h.expires > stamp)
                .map(|(channel, h)| (channel.to_string(), self.nodes.key(h.node).clone(), h.expires.left(stamp)))
                .collect(),
        }
    }

    /// Drops expired entries, and the nodes no entry points at any more.
    pub fn sweep(&mut self, now: Instant) {
        let now = self.stamp(now);
        let mut used = vec![false; self.nodes.0.len()];
        self.by_issuer.retain(|_, p| {
            used[p.node.0 as usize] |= p.expires > now;
            p.expires > now
        });
        self.by_channel.retain(|_, h| {
            used[h.node.0 as usize] |= h.expires > now;
            h.expires > now
        });
        if used.contains(&false) {
            self.forget_nodes_but(&used);
        }
        // After a burst has expired, give the tables' memory back (with room to grow again).
        shrink(&mut self.by_issuer);
        shrink(&mut self.by_channel);
    }

    /// Keeps the nodes marked `used`, renumbered in order, and points the entries at their new
    /// numbers.
    fn forget_nodes_but(&mut self, used: &[bool]) {
        let mut renumbered = Vec::with_capacity(used.len());
        let mut kept = 0;
        for &u in used {
            renumbered.push(NodeId(kept));
            kept += u32::from(u);
        }
        let mut at = 0;
        self.nodes.0.retain(|_| {
            at += 1;
            used[at - 1]
        });
        self.by_issuer.values_mut().for_each(|p| p.node = renumbered[p.node.0 as usize]);
        self.by_channel.values_mut().for_each(|h| h.node = renumbered[h.node.0 as usize]);
    }

    /// Confirmed, unexpired issuer placements per node.
    pub fn count_by_node(&self, now: Instant) -> StdHashMap<NodeKey, usize> {
        let now = self.stamp(now);
        let mut counts = StdHashMap::new();
        for p in self.by_issuer.values().filter(|p| p.confirmed && p.expires > now) {
            *counts.entry(self.nodes.key(p.node).clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Bytes one placed channel costs (its issuer entry and its channel entry), by construction:
    /// the hash-table slots (entry and control byte) and the issuer key's heap block. A uuid
    /// channel is inline (any other costs its text's block too). A table is at most 7/8 full, so
    /// the slots cost up to 8/7 of this, and up to twice that just after the table doubled.
    pub fn bytes_per_entry(issuer_len: usize) -> usize {
        let slot = |entry: usize| entry + 1;
        slot(size_of::<(Box<str>, Placement)>()) + slot(size_of::<(ChannelKey, Holder)>()) + heap_block(issuer_len)
    }

    /// Entries held (issuers, channels), expired ones included until the next sweep.
    pub fn len(&self) -> (usize, usize) {
        (self.by_issuer.len(), self.by_channel.len())
    }
}

/// What mimalloc (the gateway's allocator) hands out for `len` bytes: 8-byte steps up to 64, then
/// four sizes per doubling.
fn heap_block(len: usize) -> usize {
    let len = len.max(1);
    if len <= 64 {
        return len.next_multiple_of(8);
    }
    let power = len.next_power_of_two() / 2;
    len.next_multiple_of(power / 4)
}

/// Shrinks a table that is less than a quarter full to twice its length.
fn shrink<K: std::hash::Hash + Eq, V>(table: &mut Table<K, V>) {
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

    #[test]
    fn a_channel_comes_back_as_the_text_it_was_given() {
        let rows = [
            ("0b6a5d4e-1c2f-4a3b-9d8e-7f6a5b4c3d2e", true), // what ringsfu and Odoo's SFU make: inline
            ("0B6A5D4E-1C2F-4A3B-9D8E-7F6A5B4C3D2E", false), // upper case would come back lower: kept as text
            ("0b6a5d4e1c2f4a3b9d8e7f6a5b4c3d2e", false),
            ("{0b6a5d4e-1c2f-4a3b-9d8e-7f6a5b4c3d2e}", false),
            ("channel-7", false),
            ("", false),
        ];
        let t0 = Instant::now();
        let a = key("http://a");
        let mut p = Placements::new(10 * MIN, 60 * MIN);
        for (i, (channel, inline)) in rows.iter().enumerate() {
            let key = ChannelKey::of(channel);
            assert_eq!(matches!(key, ChannelKey::Uuid(_)), *inline, "{channel}");
            assert_eq!(key.to_string(), *channel);
            assert!(p.confirm(&format!("iss-{i}"), &a, channel, t0), "{channel}");
            assert_eq!(p.holder(channel, t0), Some(&a), "{channel}");
        }
        assert_eq!(p.holder("0b6a5d4e-1c2f-4a3b-9d8e-7f6a5b4c3d2f", t0), None);
        let mut channels: Vec<String> = p.snapshot(t0).channels.into_iter().map(|(c, _, _)| c).collect();
        channels.sort();
        let mut given: Vec<&str> = rows.iter().map(|(c, _)| *c).collect();
        given.sort();
        assert_eq!(channels, given);
    }

    #[test]
    fn a_sweep_forgets_the_nodes_nothing_points_at_and_keeps_the_others_right() {
        let t0 = Instant::now();
        let (a, b, c) = (key("http://a"), key("http://b"), key("http://c"));
        let mut p = Placements::new(10 * MIN, 60 * MIN);
        p.confirm("on-a", &a, "uuid-a", t0);
        p.reserve("on-b", &b, t0 + 55 * MIN);
        p.confirm("on-c", &c, "uuid-c", t0 + 55 * MIN);
        assert_eq!(p.nodes.0.len(), 3);
        let later = t0 + 61 * MIN;
        p.sweep(later);
        assert_eq!(p.nodes.0, vec![b.clone(), c.clone()], "a held nothing any more");
        assert_eq!(p.sticky("on-b", later), Some(&b));
        assert_eq!(p.confirmed("on-c", later), Some(&c));
        assert_eq!(p.holder("uuid-c", later), Some(&c));
        // A node is found by its address, whichever `Arc` holds it.
        p.release("on-b", &key("http://b"));
        assert_eq!(p.sticky("on-b", later), None);
        p.reserve("again", &key("http://a"), later);
        assert_eq!(p.sticky("again", later), Some(&a));
    }

    #[test]
    fn a_placement_costs_what_its_slots_and_its_issuer_key_cost() {
        assert_eq!([1, 8, 9, 14, 64, 65, 80, 81, 128, 129].map(heap_block), [8, 8, 16, 16, 64, 80, 80, 96, 128, 160]);
        // A 33-byte and a 41-byte slot, and "odoo:channel:12345" in a 24-byte block.
        assert_eq!(size_of::<(Box<str>, Placement)>(), 32);
        assert_eq!(size_of::<(ChannelKey, Holder)>(), 40);
        assert_eq!(Placements::bytes_per_entry("odoo:channel:12345".len()), 33 + 41 + 24);
    }
}
