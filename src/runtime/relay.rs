//! The links between shard threads for channels spread over shards (docs/cross-shard.md): one
//! single-producer single-consumer ring (`rtrb`, lock-free) per ordered pair of shards, and the
//! receiver's doorbell, rung once per flush.
//!
//! Each ring is bounded twice: [`RING`] messages, and [`RING_BYTES`] of what they hold
//! ([`Relay::weight`], payloads included), counted by the sender as it pushes and taken off by
//! the receiver once per turn (one shared atomic per ring, no lock). A packet that finds no room
//! is dropped (the caller counts it). The other messages (sessions, producers, keyframe
//! requests) must arrive, and in order with the packets, so one that finds no room waits in the
//! sender's overflow, and the packets behind it are dropped until the overflow has drained into
//! the ring. The overflow is bounded too ([`OVERFLOW_BYTES`]). Past it the receiver has been
//! stuck for long: the messages of the channel that would go past it are dropped with the rest
//! of that channel's waiting ones, a `Reset` takes their place, and the caller is told to give
//! up on that part ([`Sent::Cut`]).

use super::ring::Doorbell;
use ringsfu_core::sfu::ChannelId;
use ringsfu_core::sfu::relay::{Relay, RelayMessage};
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Messages in flight from one shard to another.
pub const RING: usize = 4096;
/// Bytes in flight from one shard to another: about 1,400 full-size packets, a second of ten
/// publishers' top video layers.
pub const RING_BYTES: usize = 2 << 20;
/// Bytes of messages other than packets waiting for room in one ring.
pub const OVERFLOW_BYTES: usize = 1 << 20;

/// One shard's ends of its links to the others.
pub struct Links {
    outgoing: Vec<Option<Outgoing>>,
    incoming: Vec<Incoming>,
    doorbells: Vec<Arc<Doorbell>>,
    /// Shards sent something during this flush (rung once each at its end).
    to_ring: Vec<usize>,
}

struct Outgoing {
    ring: rtrb::Producer<Relay>,
    /// The weight of the messages in the ring (the receiver takes off what it pops).
    in_ring: Arc<AtomicUsize>,
    overflow: VecDeque<Relay>,
    overflow_bytes: usize,
    /// The overflow went past its bound since it last drained (logged once).
    stuck: bool,
}

struct Incoming {
    from: usize,
    ring: rtrb::Consumer<Relay>,
    in_ring: Arc<AtomicUsize>,
}

/// What became of a message handed to [`Links::send`].
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// A packet that found no room: the caller counts it.
    PacketDropped,
    /// The receiver has been stuck for long: this channel's messages to it are dropped and a
    /// `Reset` goes in their place. The caller's part of the channel gives up on the receiver's
    /// (`Shard::lost_relay`).
    Cut(ChannelId),
    /// No link to that shard.
    NoLink,
}

/// The links of every shard, by shard index (each to its shard thread).
pub fn links(doorbells: &[Arc<Doorbell>]) -> Vec<Links> {
    let n = doorbells.len();
    let mut all: Vec<Links> = (0..n)
        .map(|_| Links {
            outgoing: (0..n).map(|_| None).collect(),
            incoming: Vec::new(),
            doorbells: doorbells.to_vec(),
            to_ring: Vec::new(),
        })
        .collect();
    for from in 0..n {
        for to in (0..n).filter(|to| *to != from) {
            let (producer, consumer) = rtrb::RingBuffer::new(RING);
            let in_ring = Arc::new(AtomicUsize::new(0));
            all[from].outgoing[to] = Some(Outgoing {
                ring: producer,
                in_ring: in_ring.clone(),
                overflow: VecDeque::new(),
                overflow_bytes: 0,
                stuck: false,
            });
            all[to].incoming.push(Incoming { from, ring: consumer, in_ring });
        }
    }
    all
}

impl Outgoing {
    /// Pushes `relay` into the ring if it has room for it, in messages and in bytes (a message
    /// heavier than the whole budget goes alone into an empty ring).
    fn try_push(&mut self, relay: Relay, weight: usize) -> Result<(), Relay> {
        let in_ring = self.in_ring.load(Ordering::Relaxed);
        if in_ring > 0 && in_ring + weight > RING_BYTES {
            return Err(relay);
        }
        match self.ring.push(relay) {
            Ok(()) => {
                self.in_ring.fetch_add(weight, Ordering::Relaxed);
                Ok(())
            }
            Err(rtrb::PushError::Full(relay)) => Err(relay),
        }
    }
}

impl Links {
    /// Queues a message for shard `to`.
    pub fn send(&mut self, to: usize, relay: Relay) -> Sent {
        let Some(out) = self.outgoing.get_mut(to).and_then(Option::as_mut) else { return Sent::NoLink };
        let packet = matches!(relay.message, RelayMessage::Packet(_));
        let weight = relay.weight();
        let relay = if out.overflow.is_empty() {
            match out.try_push(relay, weight) {
                Ok(()) => {
                    mark(&mut self.to_ring, to);
                    return Sent::Queued;
                }
                Err(relay) => relay,
            }
        } else {
            relay
        };
        if packet {
            return Sent::PacketDropped;
        }
        if out.overflow_bytes + weight > OVERFLOW_BYTES {
            let channel = relay.channel;
            if !out.stuck {
                out.stuck = true;
                tracing::error!(to, %channel, "the relay to a shard is stuck: its channels' parts there are given up");
            }
            out.overflow.retain(|r| r.channel != channel);
            let reset = Relay { channel, message: RelayMessage::Reset };
            // A reset may go past the bound: one per channel at most, as the core sends the
            // channel nothing more after it.
            out.overflow.push_back(reset);
            out.overflow_bytes = out.overflow.iter().map(Relay::weight).sum();
            return Sent::Cut(channel);
        }
        out.overflow_bytes += weight;
        out.overflow.push_back(relay);
        Sent::Queued
    }

    /// Moves waiting messages into their rings where there is room, and rings the doorbell of
    /// every shard sent something since the last call.
    pub fn flush(&mut self) {
        for (to, out) in self.outgoing.iter_mut().enumerate() {
            let Some(out) = out.as_mut() else { continue };
            while let Some(relay) = out.overflow.pop_front() {
                let weight = relay.weight();
                match out.try_push(relay, weight) {
                    Ok(()) => {
                        out.overflow_bytes -= weight;
                        mark(&mut self.to_ring, to);
                    }
                    Err(relay) => {
                        out.overflow.push_front(relay);
                        break;
                    }
                }
            }
            if out.overflow.is_empty() {
                out.overflow_bytes = 0;
                out.stuck = false;
            }
        }
        for to in self.to_ring.drain(..) {
            self.doorbells[to].ring();
        }
    }

    /// Whether messages wait in an overflow (they go at the next `flush` with room). The shard
    /// loop does not ask: every wake-up flushes.
    #[cfg(test)]
    fn waiting(&self) -> bool {
        self.outgoing.iter().flatten().any(|o| !o.overflow.is_empty())
    }

    /// Hands up to `max` received messages to `handle`; returns how many, and whether more are
    /// left.
    pub fn receive(&mut self, max: usize, mut handle: impl FnMut(usize, Relay)) -> (usize, bool) {
        let mut handled = 0;
        for incoming in &mut self.incoming {
            let mut weight = 0;
            while handled < max {
                let Ok(relay) = incoming.ring.pop() else { break };
                weight += relay.weight();
                handle(incoming.from, relay);
                handled += 1;
            }
            if weight > 0 {
                incoming.in_ring.fetch_sub(weight, Ordering::Relaxed);
            }
        }
        let more = self.incoming.iter().any(|i| !i.ring.is_empty());
        (handled, more)
    }
}

/// Notes that shard `to` is to be rung at the end of the flush (once).
fn mark(to_ring: &mut Vec<usize>, to: usize) {
    if !to_ring.contains(&to) {
        to_ring.push(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringsfu_core::sfu::relay::RelayedPacket;

    fn channel(n: u128) -> ChannelId {
        ChannelId(uuid::Uuid::from_u128(n))
    }

    fn packet_of(channel: ChannelId, bytes: usize) -> Relay {
        let packet = RelayedPacket {
            producer: uuid::Uuid::nil(),
            layer: 0,
            seq: 0,
            timestamp: 0,
            marker: false,
            payload_type: 96,
            header_len: 12,
            audio_level: None,
            video_orientation: None,
            payload: Arc::new(vec![0; bytes]),
        };
        Relay { channel, message: RelayMessage::Packet(packet) }
    }

    fn message(packet: bool) -> Relay {
        if packet { packet_of(channel(0), 100) } else { Relay { channel: channel(0), message: RelayMessage::Hello } }
    }

    fn broadcast(channel: ChannelId, bytes: usize) -> Relay {
        let payload: Arc<str> = "x".repeat(bytes).into();
        Relay { channel, message: RelayMessage::Broadcast { from: ringsfu_core::sfu::SessionRef(1), payload } }
    }

    fn pair() -> (Links, Links) {
        let doorbells: Vec<Arc<Doorbell>> = (0..2).map(|_| Arc::new(Doorbell::new().unwrap())).collect();
        let mut links = links(&doorbells);
        let mut it = links.drain(..);
        (it.next().unwrap(), it.next().unwrap())
    }

    fn drain(b: &mut Links) -> Vec<Relay> {
        let mut got = Vec::new();
        while let (1.., _) = b.receive(RING, |_, r| got.push(r)) {}
        got
    }

    /// A full ring drops packets, keeps the other messages in order behind it, and hands them
    /// over as the receiver makes room; nothing is ever lost out of order.
    #[test]
    fn a_full_ring_drops_packets_and_keeps_the_rest_in_order() {
        let (mut a, mut b) = pair();
        for _ in 0..RING {
            assert_eq!(a.send(1, message(true)), Sent::Queued);
        }
        assert_eq!(a.send(1, message(true)), Sent::PacketDropped);
        assert_eq!(a.send(1, message(false)), Sent::Queued);
        // Behind a waiting message, packets are dropped even once there is room.
        let (n, more) = b.receive(10, |_, _| {});
        assert_eq!((n, more), (10, true));
        assert_eq!(a.send(1, message(true)), Sent::PacketDropped);
        assert!(a.waiting());
        a.flush();
        assert!(!a.waiting());
        let kinds: Vec<bool> = drain(&mut b).iter().map(|r| matches!(r.message, RelayMessage::Packet(_))).collect();
        assert_eq!(kinds.len(), RING - 10 + 1);
        assert_eq!(kinds.last(), Some(&false), "the waiting message came last, after the packets before it");
        assert_eq!(a.send(1, message(true)), Sent::Queued);
    }

    /// Large packets fill a ring's bytes long before its message slots; the receiver taking
    /// them gives the room back.
    #[test]
    fn a_ring_is_bounded_in_bytes() {
        let (mut a, mut b) = pair();
        let weight = packet_of(channel(0), 1200).weight();
        let fit = RING_BYTES / weight;
        assert!(fit < RING / 2, "the byte bound comes first for full-size packets");
        for _ in 0..fit {
            assert_eq!(a.send(1, packet_of(channel(0), 1200)), Sent::Queued);
        }
        assert_eq!(a.send(1, packet_of(channel(0), 1200)), Sent::PacketDropped);
        // One message heavier than the whole budget still goes, alone, into an empty ring.
        assert_eq!(drain(&mut b).len(), fit);
        assert_eq!(a.send(1, packet_of(channel(0), 3 << 20)), Sent::Queued);
        assert_eq!(a.send(1, packet_of(channel(0), 100)), Sent::PacketDropped);
        assert_eq!(drain(&mut b).len(), 1);
        assert_eq!(a.send(1, packet_of(channel(0), 1200)), Sent::Queued);
    }

    /// A receiver that takes nothing: the overflow fills to its byte bound, then the channel
    /// whose message would go past it is cut (its waiting messages replaced by one `Reset`),
    /// while the other channel's waiting messages keep their place and order.
    #[test]
    fn a_stuck_receiver_cuts_the_channel_that_overflows() {
        let (mut a, mut b) = pair();
        let (busy, quiet) = (channel(1), channel(2));
        while a.send(1, broadcast(busy, 1000)) == Sent::Queued && !a.waiting() {}
        assert_eq!(a.send(1, broadcast(quiet, 1000)), Sent::Queued, "waits in the overflow");
        let mut sent = 1;
        let cut = loop {
            match a.send(1, broadcast(busy, 1000)) {
                Sent::Queued => sent += 1,
                other => break other,
            }
            assert!(sent < 2 * OVERFLOW_BYTES / 1000, "the overflow is bounded in bytes");
        };
        assert_eq!(cut, Sent::Cut(busy));
        assert!(a.outgoing[1].as_ref().unwrap().overflow_bytes <= OVERFLOW_BYTES);
        a.flush();
        let in_ring = drain(&mut b);
        assert_eq!(
            a.outgoing[1].as_ref().unwrap().in_ring.load(Ordering::Relaxed),
            0,
            "the receiver gave the bytes back"
        );
        a.flush();
        let after: Vec<(ChannelId, bool)> =
            drain(&mut b).iter().map(|r| (r.channel, matches!(r.message, RelayMessage::Reset))).collect();
        assert!(!in_ring.is_empty());
        assert_eq!(after, vec![(quiet, false), (busy, true)], "the quiet channel's message, then the busy one's reset");
        assert!(!a.waiting());
        assert_eq!(a.send(1, broadcast(busy, 1000)), Sent::Queued, "a drained link takes the channel again");
    }
}
