//! The channel directory of the control plane: which channels exist, who created them, with
//! which key, on which shard. The shards own the channels' state; this is the index that lets
//! HTTP and WebSocket requests find them.

use super::placement;
use ringsfu_common::auth::Key;
use ringsfu_core::sfu::ChannelId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

#[derive(Debug)]
pub struct ChannelEntry {
    pub id: ChannelId,
    /// The per-channel key of the `key` claim, if any.
    pub key: Option<Key>,
    pub webrtc: bool,
    pub shard: usize,
    /// The creator's address: only it may `/v1/disconnect` sessions of this channel.
    pub remote_address: String,
    pub created: SystemTime,
    /// Where its sessions are, when it spreads over shards (docs/cross-shard.md).
    spread: Mutex<Spread>,
}

#[derive(Debug)]
struct Spread {
    /// The shards holding a part of the channel, its home first.
    parts: Vec<usize>,
    /// The channel's sessions on each shard.
    sessions: Vec<usize>,
}

impl ChannelEntry {
    /// Places one more session (`placement::place`) and counts it there; returns its shard and
    /// the shards holding a part of the channel (that one included). `None` when the channel,
    /// spread or about to spread, already holds `channel_size` sessions: each part counts the
    /// others' sessions only as their introductions arrive, so a join reaching a part made a
    /// moment before could pass the size there. On one shard the shard's own count decides, as
    /// it does exactly.
    pub fn place_session(&self, cpu: &[f64], budget: usize, channel_size: usize) -> Option<(usize, Vec<usize>)> {
        let mut spread = self.spread.lock().expect("spread lock is never poisoned");
        let shards = placement::Shards { home: self.shard, sessions: &spread.sessions, cpu, parts: &spread.parts };
        let shard = placement::place(&shards, budget);
        let spread_over_shards = spread.parts.len() > 1 || !spread.parts.contains(&shard);
        if spread_over_shards && spread.sessions.iter().sum::<usize>() >= channel_size {
            return None;
        }
        if let Some(n) = spread.sessions.get_mut(shard) {
            *n += 1;
        }
        if !spread.parts.contains(&shard) {
            spread.parts.push(shard);
        }
        Some((shard, spread.parts.clone()))
    }

    /// A session placed by `place_session` on `shard` ended.
    pub fn session_ended(&self, shard: usize) {
        let mut spread = self.spread.lock().expect("spread lock is never poisoned");
        if let Some(n) = spread.sessions.get_mut(shard) {
            *n = n.saturating_sub(1);
        }
    }

    /// The channel's sessions on each shard, when it is spread over more than one.
    pub fn spread(&self) -> Option<Vec<usize>> {
        let spread = self.spread.lock().expect("spread lock is never poisoned");
        (spread.parts.len() > 1).then(|| spread.sessions.clone())
    }

    /// The shards holding a part of the channel, its home first.
    pub fn parts(&self) -> Vec<usize> {
        self.spread.lock().expect("spread lock is never poisoned").parts.clone()
    }
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<ChannelId, Arc<ChannelEntry>>,
    /// `remoteAddress::iss` → channel: the same caller asking for the same issuer gets the same
    /// channel back.
    by_issuer: HashMap<String, ChannelId>,
    per_shard: Vec<usize>,
}

#[derive(Default)]
pub struct Directory {
    inner: Mutex<Inner>,
}

/// The caller's request for a channel.
pub struct ChannelRequest<'a> {
    pub remote_address: &'a str,
    pub issuer: &'a str,
    pub key: Option<Key>,
    pub webrtc: bool,
}

impl Directory {
    pub fn new(shards: usize) -> Directory {
        Directory { inner: Mutex::new(Inner { per_shard: vec![0; shards], ..Default::default() }) }
    }

    /// The caller's existing channel for this issuer, or a new one placed by `place` (given the
    /// channel count per shard). The second value says whether it was created.
    pub fn get_or_create(
        &self,
        request: ChannelRequest<'_>,
        place: impl FnOnce(&[usize]) -> usize,
        on_create: impl FnOnce(&ChannelEntry),
    ) -> (Arc<ChannelEntry>, bool) {
        let issuer_key = format!("{}::{}", request.remote_address, request.issuer);
        let mut inner = self.inner.lock().expect("directory lock is never poisoned");
        if let Some(id) = inner.by_issuer.get(&issuer_key)
            && let Some(entry) = inner.by_id.get(id)
        {
            return (entry.clone(), false);
        }
        let shard = place(&inner.per_shard);
        let shards = inner.per_shard.len();
        let entry = Arc::new(ChannelEntry {
            id: ChannelId::random(),
            key: request.key,
            webrtc: request.webrtc,
            shard,
            remote_address: request.remote_address.to_string(),
            created: SystemTime::now(),
            spread: Mutex::new(Spread { parts: vec![shard], sessions: vec![0; shards] }),
        });
        // Told to the shard under the lock: the shard learns of the channel before anyone can
        // know its uuid, and before any WebSocket can try to join it.
        on_create(&entry);
        inner.by_id.insert(entry.id, entry.clone());
        inner.by_issuer.insert(issuer_key, entry.id);
        inner.per_shard[shard] += 1;
        (entry, true)
    }

    pub fn get(&self, id: &ChannelId) -> Option<Arc<ChannelEntry>> {
        self.inner.lock().expect("directory lock is never poisoned").by_id.get(id).cloned()
    }

    pub fn remove(&self, id: &ChannelId) {
        let mut inner = self.inner.lock().expect("directory lock is never poisoned");
        if let Some(entry) = inner.by_id.remove(id) {
            inner.by_issuer.retain(|_, v| v != id);
            inner.per_shard[entry.shard] = inner.per_shard[entry.shard].saturating_sub(1);
        }
    }

    /// A channel's part on `shard` closed: at its home the channel is gone; elsewhere that
    /// shard holds no part any more.
    pub fn part_closed(&self, id: &ChannelId, shard: usize) {
        let Some(entry) = self.get(id) else { return };
        if entry.shard == shard {
            self.remove(id);
        } else {
            entry.spread.lock().expect("spread lock is never poisoned").parts.retain(|p| *p != shard);
        }
    }

    pub fn all(&self) -> Vec<Arc<ChannelEntry>> {
        self.inner.lock().expect("directory lock is never poisoned").by_id.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("directory lock is never poisoned").by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request<'a>(addr: &'a str, iss: &'a str) -> ChannelRequest<'a> {
        ChannelRequest { remote_address: addr, issuer: iss, key: None, webrtc: true }
    }

    #[test]
    fn same_caller_and_issuer_reuse_the_channel() {
        let d = Directory::new(2);
        let (a, created) = d.get_or_create(request("1.1.1.1", "odoo:1"), |_| 0, |_| {});
        assert!(created);
        let (b, created) = d.get_or_create(request("1.1.1.1", "odoo:1"), |_| 1, |_| {});
        assert!(!created);
        assert_eq!(a.id, b.id);
        // Another caller with the same issuer gets another channel.
        let (c, _) = d.get_or_create(
            request("2.2.2.2", "odoo:1"),
            |counts| {
                assert_eq!(counts, &[1, 0]);
                1
            },
            |_| {},
        );
        assert_ne!(a.id, c.id);
        d.remove(&a.id);
        assert!(d.get(&a.id).is_none());
        let (e, created) = d.get_or_create(request("1.1.1.1", "odoo:1"), |_| 0, |_| {});
        assert!(created);
        assert_ne!(e.id, a.id);
        assert_eq!(d.len(), 2);
    }

    /// A channel spread over shards is refused past its size by the placed count, every part's
    /// sessions together; one on a single shard is left to its shard.
    #[test]
    fn a_spread_channel_is_full_at_its_size_over_all_parts() {
        let directory = Directory::new(2);
        let entry = directory.get_or_create(request("1.2.3.4", "a"), |_| 0, |_| {}).0;
        let cpu = [0.0, 0.0];
        // Budget 2 per shard, size 5: two at home, then the others spread.
        let placed: Vec<usize> = (0..5).map(|_| entry.place_session(&cpu, 2, 5).expect("room").0).collect();
        assert_eq!(&placed[..3], [0, 0, 1]);
        assert_eq!(entry.place_session(&cpu, 2, 5), None, "five sessions over two parts");
        entry.session_ended(1);
        assert!(entry.place_session(&cpu, 2, 5).is_some(), "room again once one ended");
        assert_eq!(entry.place_session(&cpu, 2, 5), None);
        // On one shard, the shard refuses (it counts exactly): never the placement.
        let alone = directory.get_or_create(request("1.2.3.4", "b"), |_| 0, |_| {}).0;
        for _ in 0..10 {
            assert_eq!(alone.place_session(&cpu, 100, 5).map(|p| p.0), Some(0));
        }
    }
}
