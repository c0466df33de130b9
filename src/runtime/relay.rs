//! The links between shard threads for channels spread over shards (docs/cross-shard.md): one
//! single-producer single-consumer ring (`rtrb`, lock-free) per ordered pair of shards, and the
//! receiver's doorbell, rung once per flush.
//!
//! A ring holds [`RING`] messages. A packet that finds its ring full is dropped (the caller
//! counts it). The other messages (sessions, producers, keyframe requests) must arrive, and in
//! order with the packets, so one that finds the ring full waits in the sender's overflow. The
//! packets behind it are dropped until the overflow has drained into the ring. The overflow is
//! bounded too ([`MAX_OVERFLOW`]): past it the receiver has been stuck for long, and messages
//! are dropped with an error logged.

use super::ring::Doorbell;
use ringsfu_core::sfu::relay::{Relay, RelayMessage};
use std::collections::VecDeque;
use std::sync::Arc;

/// Messages in flight from one shard to another (a packet's payload is shared, not copied:
/// a full ring holds about 6 MiB of payloads at most).
pub const RING: usize = 4096;
/// Messages other than packets waiting for room in one ring.
pub const MAX_OVERFLOW: usize = 16_384;

/// One shard's ends of its links to the others.
pub struct Links {
    outgoing: Vec<Option<Outgoing>>,
    incoming: Vec<(usize, rtrb::Consumer<Relay>)>,
    doorbells: Vec<Arc<Doorbell>>,
    /// Shards sent something during this flush (rung once each at its end).
    to_ring: Vec<usize>,
}

struct Outgoing {
    ring: rtrb::Producer<Relay>,
    overflow: VecDeque<Relay>,
}

/// What became of a message handed to [`Links::send`].
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Queued,
    /// A packet that found no room: the caller counts it.
    PacketDropped,
    /// Another message past the overflow's bound.
    Lost,
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
            all[from].outgoing[to] = Some(Outgoing { ring: producer, overflow: VecDeque::new() });
            all[to].incoming.push((from, consumer));
        }
    }
    all
}

impl Links {
    /// Queues a message for shard `to`.
    pub fn send(&mut self, to: usize, relay: Relay) -> Sent {
        let Some(out) = self.outgoing.get_mut(to).and_then(Option::as_mut) else { return Sent::Lost };
        let packet = matches!(relay.message, RelayMessage::Packet(_));
        let relay = if out.overflow.is_empty() {
            match out.ring.push(relay) {
                Ok(()) => {
                    mark(&mut self.to_ring, to);
                    return Sent::Queued;
                }
                Err(rtrb::PushError::Full(relay)) => relay,
            }
        } else {
            relay
        };
        if packet {
            return Sent::PacketDropped;
        }
        if out.overflow.len() >= MAX_OVERFLOW {
            tracing::error!(to, "the relay to a shard is stuck: a channel's parts no longer agree");
            return Sent::Lost;
        }
        out.overflow.push_back(relay);
        Sent::Queued
    }

    /// Moves waiting messages into their rings where there is room, and rings the doorbell of
    /// every shard sent something since the last call.
    pub fn flush(&mut self) {
        for (to, out) in self.outgoing.iter_mut().enumerate() {
            let Some(out) = out.as_mut() else { continue };
            while !out.overflow.is_empty() && !out.ring.is_full() {
                let relay = out.overflow.pop_front().expect("not empty");
                if out.ring.push(relay).is_ok() {
                    mark(&mut self.to_ring, to);
                }
            }
        }
        for to in self.to_ring.drain(..) {
            self.doorbells[to].ring();
        }
    }

    /// Whether messages wait in an overflow (they go at the next `flush` with room).
    pub fn waiting(&self) -> bool {
        self.outgoing.iter().flatten().any(|o| !o.overflow.is_empty())
    }

    /// Hands up to `max` received messages to `handle`; returns how many, and whether more are
    /// left.
    pub fn receive(&mut self, max: usize, mut handle: impl FnMut(usize, Relay)) -> (usize, bool) {
        let mut handled = 0;
        for (from, ring) in &mut self.incoming {
            while handled < max {
                let Ok(relay) = ring.pop() else { break };
                handle(*from, relay);
                handled += 1;
            }
        }
        let more = self.incoming.iter().any(|(_, ring)| !ring.is_empty());
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
    use ringsfu_core::sfu::ChannelId;

    fn message(packet: bool) -> Relay {
        let message = if packet {
            RelayMessage::Packet(ringsfu_core::sfu::relay::RelayedPacket {
                producer: uuid::Uuid::nil(),
                layer: 0,
                seq: 0,
                timestamp: 0,
                marker: false,
                payload_type: 96,
                header_len: 12,
                audio_level: None,
                video_orientation: None,
                payload: Arc::new(vec![0; 100]),
            })
        } else {
            RelayMessage::Hello
        };
        Relay { channel: ChannelId(uuid::Uuid::nil()), message }
    }

    /// A full ring drops packets, keeps the other messages in order behind it, and hands them
    /// over as the receiver makes room; nothing is ever lost out of order.
    #[test]
    fn a_full_ring_drops_packets_and_keeps_the_rest_in_order() {
        let doorbells: Vec<Arc<Doorbell>> = (0..2).map(|_| Arc::new(Doorbell::new().unwrap())).collect();
        let mut links = links(&doorbells);
        let (mut a, mut b) = {
            let mut it = links.drain(..);
            (it.next().unwrap(), it.next().unwrap())
        };
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
        let mut kinds = Vec::new();
        while let (1.., _) = b.receive(RING, |from, r| kinds.push((from, matches!(r.message, RelayMessage::Packet(_)))))
        {
        }
        assert_eq!(kinds.len(), RING - 10 + 1);
        assert_eq!(kinds.last(), Some(&(0, false)), "the waiting message came last, after the packets before it");
        assert_eq!(a.send(1, message(true)), Sent::Queued);
    }
}
