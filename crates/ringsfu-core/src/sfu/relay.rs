//! What the parts of one channel on different shards tell each other (docs/cross-shard.md).
//!
//! A session lives on one part; the others hold a mirror of it and of its producers. The owner's
//! part sends what changes (membership, info, broadcasts, producers) and each of its producers'
//! packets once per other part; a mirror's consumers ask the owner for keyframes. Messages
//! between two shards arrive in the order they were sent: a session's `Joined` comes before its
//! producers, a producer's `ProducerOpened` before its packets.

use super::forward::Received;
use super::ids::{ChannelId, SessionRef};
use super::ingress::payloads::Payload;
use super::ortc::producer_params::{ProducerCodec, ProducerParams};
use crate::protocol::messages::MediaType;
use crate::protocol::{SessionId, SessionInfo};
use std::sync::Arc;
use uuid::Uuid;

/// One message from one part of `channel` to another.
#[derive(Debug, Clone)]
pub struct Relay {
    pub channel: ChannelId,
    pub message: RelayMessage,
}

#[derive(Debug, Clone)]
pub enum RelayMessage {
    /// A new part: the others add it to their peers and send it what they hold, and the parts
    /// they know of.
    Hello,
    /// The parts the sender knows of: the receiver greets those it does not know yet (two
    /// parts made at the same moment learn of each other through a third).
    Peers(Vec<usize>),
    /// The sender's part closed (its last session left): the others stop relaying to it.
    Gone,
    /// A session of the sender's part is connected (it answered `INIT_TRANSPORTS`).
    Joined {
        session: SessionRef,
        id: SessionId,
        info: SessionInfo,
    },
    Info {
        session: SessionRef,
        info: SessionInfo,
    },
    Broadcast {
        from: SessionRef,
        payload: Arc<str>,
    },
    Left {
        session: SessionRef,
    },
    ProducerOpened {
        session: SessionRef,
        producer: Uuid,
        media: MediaType,
        params: Box<ProducerParams>,
        paused: bool,
        cname: String,
    },
    ProducerPaused {
        producer: Uuid,
        paused: bool,
    },
    ProducerClosed {
        producer: Uuid,
    },
    /// A producer's packet, as its owner's part received it.
    Packet(RelayedPacket),
    /// A mirror's consumer wants a keyframe of `layer` (the owner throttles).
    Keyframe {
        producer: Uuid,
        layer: u8,
    },
    /// The channel closed at its home (the lone-channel hour): every part closes with it, its
    /// sessions told as the home's were.
    Close,
    /// The sender could not reach this part for long (its link here stayed full) and dropped
    /// it: this part forgets the sender's part and its sessions likewise. The sender closed its
    /// own sessions of the channel, whose clients reconnect and introduce themselves again.
    Reset,
}

impl Relay {
    /// About how many bytes this message holds, its payload included: what the links between
    /// shards bound their queues by. The same message always weighs the same (its parts do not
    /// change while it travels), so the receiver takes off what the sender added.
    pub fn weight(&self) -> usize {
        use std::mem::size_of;
        let held = match &self.message {
            RelayMessage::Packet(p) => p.payload.capacity(),
            RelayMessage::Peers(shards) => shards.capacity() * size_of::<usize>(),
            RelayMessage::Joined { id: SessionId::Text(text), .. } => text.len(),
            RelayMessage::Broadcast { payload, .. } => payload.len(),
            RelayMessage::ProducerOpened { params, cname, .. } => {
                let strings = [&params.mid, &params.cname, &params.msid].into_iter().flatten().map(String::len);
                // A codec's parameters: a key, a small value, and the map's own entry.
                let parameters = params.codecs.iter().flat_map(|c| c.parameters.iter());
                let parameters = parameters.map(|(k, v)| k.len() + v.as_str().map_or(0, str::len) + 64);
                size_of::<ProducerParams>()
                    + params.codecs.capacity() * size_of::<ProducerCodec>()
                    + parameters.sum::<usize>()
                    + strings.sum::<usize>()
                    + cname.len()
            }
            _ => 0,
        };
        size_of::<Relay>() + held
    }
}

/// `forward::Received`, owning its payload (a reference to the owner's layer ring: no copy).
#[derive(Debug, Clone)]
pub struct RelayedPacket {
    pub producer: Uuid,
    pub layer: u8,
    pub seq: u64,
    pub timestamp: u32,
    pub marker: bool,
    pub payload_type: u8,
    pub header_len: usize,
    pub audio_level: Option<(u8, bool)>,
    pub video_orientation: Option<u8>,
    pub payload: Payload,
}

impl RelayedPacket {
    pub fn new(producer: Uuid, layer: u8, packet: &Received) -> RelayedPacket {
        RelayedPacket {
            producer,
            layer,
            seq: packet.seq,
            timestamp: packet.timestamp,
            marker: packet.marker,
            payload_type: packet.payload_type,
            header_len: packet.header_len,
            audio_level: packet.audio_level,
            video_orientation: packet.video_orientation,
            payload: packet.payload.clone(),
        }
    }

    /// The packet as the fan-out takes it.
    pub fn received(&self) -> Received<'_> {
        Received {
            seq: self.seq,
            timestamp: self.timestamp,
            marker: self.marker,
            payload_type: self.payload_type,
            header_len: self.header_len,
            audio_level: self.audio_level,
            video_orientation: self.video_orientation,
            payload: &self.payload,
        }
    }
}
