//! A router as one part of a channel spread over shards (docs/cross-shard.md): what it tells
//! the other parts about its own sessions and producers, and the mirrors it keeps of theirs.

use super::Router;
use crate::protocol::CloseCode;
use crate::protocol::messages::name;
use crate::protocol::{SessionId, SessionInfo};
use crate::sfu::command::{SessionEvent, ShardEvent};
use crate::sfu::context::Context;
use crate::sfu::ids::SessionRef;
use crate::sfu::producer::{Layer, Producer, ProducerKey};
use crate::sfu::rate::RateMeter;
use crate::sfu::relay::{Relay, RelayMessage};
use crate::sfu::session::Session;
use crate::sfu::transport::SsrcRoute;
use serde_json::{Map, Value};
use smallvec::SmallVec;
use std::time::Instant;
use str0m::media::{Mid, Rid};

impl Router {
    /// Sends `message` to every other part of the channel.
    pub(crate) fn relay_to_peers(&self, cx: &mut Context, message: RelayMessage) {
        for &peer in &self.peers {
            cx.out.relay.push_back((peer, Relay { channel: self.id, message: message.clone() }));
        }
    }

    /// This part meets the channel's parts on `shards`: each adds it and tells it what it holds.
    pub(crate) fn meet(&mut self, cx: &mut Context, shards: &[usize]) {
        for &shard in shards {
            if shard != cx.index && !self.peers.contains(&shard) {
                self.peers.push(shard);
                cx.out.relay.push_back((shard, Relay { channel: self.id, message: RelayMessage::Hello }));
            }
        }
    }

    /// This part's own sessions, in the order they connected to the bus (the ones with a bus
    /// connection on this shard).
    pub(crate) fn local_sessions_in_order(&self) -> SmallVec<[SessionRef; 16]> {
        let mut local = self.sessions_in_order();
        local.retain(|r| self.sessions.get(r).is_some_and(|s| s.remote.is_none()));
        local
    }

    /// A session of this part connected: the other parts mirror it and what it publishes.
    pub(crate) fn announce_session(&self, cx: &mut Context, r: SessionRef) {
        for &peer in &self.peers {
            self.introduce_session(cx, peer, r);
        }
    }

    fn introduce_session(&self, cx: &mut Context, to: usize, r: SessionRef) {
        let Some(s) = self.sessions.get(&r).filter(|s| s.remote.is_none() && s.connected) else { return };
        let joined = RelayMessage::Joined { session: r, id: s.id.clone(), info: s.info };
        cx.out.relay.push_back((to, Relay { channel: self.id, message: joined }));
        for pk in s.producers.iter().flatten() {
            if let Some(message) = self.producer_opened(*pk) {
                cx.out.relay.push_back((to, Relay { channel: self.id, message }));
            }
        }
    }

    /// The announcement of one of this part's producers.
    pub(crate) fn producer_opened(&self, pk: ProducerKey) -> Option<RelayMessage> {
        let p = self.producers.get(pk).filter(|p| p.transport.is_some())?;
        Some(RelayMessage::ProducerOpened {
            session: p.session,
            producer: p.id,
            media: p.media,
            params: Box::new(p.params.clone()),
            paused: p.paused,
            cname: p.cname.clone(),
        })
    }

    /// A message from the part of this channel on shard `from`.
    pub(crate) fn handle_relay(&mut self, cx: &mut Context, now: Instant, from: usize, message: RelayMessage) {
        match message {
            RelayMessage::Hello => {
                if !self.peers.contains(&from) {
                    self.peers.push(from);
                }
                for r in self.local_sessions_in_order() {
                    self.introduce_session(cx, from, r);
                }
                let others: Vec<usize> = self.peers.iter().copied().filter(|p| *p != from).collect();
                if !others.is_empty() {
                    cx.out.relay.push_back((from, Relay { channel: self.id, message: RelayMessage::Peers(others) }));
                }
            }
            RelayMessage::Peers(shards) => self.meet(cx, &shards),
            RelayMessage::Gone => self.peers.retain(|p| *p != from),
            RelayMessage::Joined { session, id, info } => self.mirror_joined(cx, now, from, session, id, info),
            RelayMessage::Info { session, info } => {
                let Some(s) = self.sessions.get_mut(&session).filter(|s| s.remote.is_some()) else { return };
                s.info = info;
                self.tell_info(cx, session);
            }
            RelayMessage::Broadcast { from: sender, payload } => {
                for other in self.local_sessions_in_order() {
                    if other != sender {
                        let event = SessionEvent::Broadcast { payload: payload.clone() };
                        cx.out.events.push_back(ShardEvent::ToSession(other, event));
                    }
                }
            }
            RelayMessage::Left { session } => {
                if self.sessions.get(&session).is_some_and(|s| s.remote.is_some()) {
                    self.remove_session(cx, now, session, true);
                }
            }
            RelayMessage::ProducerOpened { session, producer, media, params, paused, cname } => {
                self.mirror_producer(cx, session, producer, media, *params, paused, cname);
            }
            RelayMessage::ProducerPaused { producer, paused } => {
                let Some(&pk) = self.mirrors.get(&producer) else { return };
                let p = &mut self.producers[pk];
                if p.paused != paused {
                    p.paused = paused;
                    let consumers = p.consumers.clone();
                    for ck in consumers {
                        self.consumer_state_changed(cx, now, ck);
                    }
                }
            }
            RelayMessage::ProducerClosed { producer } => {
                if let Some(&pk) = self.mirrors.get(&producer) {
                    self.close_producer(cx, pk);
                }
            }
            RelayMessage::Packet(packet) => {
                let Some(&pk) = self.mirrors.get(&packet.producer) else { return };
                cx.out.counters.rtp_relayed_in += 1;
                self.forward(cx, now, SsrcRoute { producer: pk, layer: packet.layer, rtx: false }, &packet.received());
            }
            RelayMessage::Keyframe { producer, layer } => {
                let local = self.producers.iter().find(|(_, p)| p.id == producer && p.transport.is_some());
                if let Some((pk, _)) = local {
                    self.request_keyframe(cx, now, pk, layer);
                }
            }
            RelayMessage::Reset => self.forget_part(cx, now, from),
            // The shard closes the whole part (`Shard::handle_relay`).
            RelayMessage::Close => {}
        }
    }

    /// The part on shard `shard` is gone to this one: no longer a peer, and its sessions leave
    /// (this part's sessions are told, as of any session leaving).
    fn forget_part(&mut self, cx: &mut Context, now: Instant, shard: usize) {
        self.peers.retain(|p| *p != shard);
        let mut theirs = self.sessions_in_order();
        theirs.retain(|r| self.sessions.get(r).is_some_and(|s| s.remote == Some(shard)));
        for r in theirs {
            self.remove_session(cx, now, r, true);
        }
    }

    /// The link to the part on shard `shard` stayed full for long: this part drops it (the link
    /// tells it to do the same) and closes its own sessions with 1011. Their clients reconnect,
    /// and their new sessions meet every part of the channel again, so the channel does not stay
    /// split in two halves that cannot see each other.
    pub(crate) fn lost_touch(&mut self, cx: &mut Context, now: Instant, shard: usize) {
        self.forget_part(cx, now, shard);
        for r in self.local_sessions_in_order() {
            self.close_session(cx, now, r, CloseCode::Error, "lost touch with another shard of the channel", true);
        }
    }

    /// A session of another part: mirrored here, so this part's sessions see it and consume
    /// what it publishes. A local session with the same id is the older connection: it goes.
    fn mirror_joined(
        &mut self,
        cx: &mut Context,
        now: Instant,
        from: usize,
        r: SessionRef,
        id: SessionId,
        info: SessionInfo,
    ) {
        if let Some(known) = self.sessions.get_mut(&r) {
            // Introduced twice (two parts met each other both ways): the mirror stays as it is.
            known.info = info;
            return;
        }
        if let Some(&old) = self.members.get(&id).filter(|old| **old != r) {
            if self.sessions.get(&old).is_some_and(|s| s.remote.is_none()) {
                self.close_session(cx, now, old, CloseCode::Kicked, "replaced by a new connection", true);
            } else {
                self.remove_session(cx, now, old, false);
            }
        }
        let session = Session::mirror(from, id.clone(), self.id, info);
        self.sessions.insert(r, session);
        self.members.insert(id, r);
        self.update_close_timer(cx, now);
    }

    /// A producer of another part's session: a mirror without a transport, whose packets come
    /// by the relay; this part's connected sessions consume it.
    #[allow(clippy::too_many_arguments)]
    fn mirror_producer(
        &mut self,
        cx: &mut Context,
        session: SessionRef,
        id: uuid::Uuid,
        media: crate::protocol::messages::MediaType,
        params: crate::sfu::ortc::producer_params::ProducerParams,
        paused: bool,
        cname: String,
    ) {
        let Some(s) = self.sessions.get(&session).filter(|s| s.remote.is_some()) else { return };
        if self.mirrors.contains_key(&id) {
            return; // announced twice
        }
        if let Some(old) = s.producers[media.index()] {
            self.close_producer(cx, old);
        }
        let kind = params.kind;
        let layers = params.encodings.iter().map(|e| Layer::new(e.rid.as_deref().map(Rid::from), kind)).collect();
        let clock_rate = params.codecs[0].clock_rate;
        let key = self.producers.insert(Producer {
            id,
            session,
            transport: None,
            cname,
            media,
            params,
            mid: Mid::from("relayed"),
            layers,
            paused,
            consumers: Vec::new(),
            forwarding: Vec::new(),
            meter: RateMeter::default(),
            clock_rate,
        });
        self.mirrors.insert(id, key);
        if let Some(s) = self.sessions.get_mut(&session) {
            s.producers[media.index()] = Some(key);
        }
        for other in self.local_sessions_in_order() {
            self.consume(cx, other, session);
        }
    }

    /// `S_INFO_CHANGE {<id>: info}` to this part's sessions other than `r`.
    pub(crate) fn tell_info(&mut self, cx: &mut Context, r: SessionRef) {
        let Some(s) = self.sessions.get(&r) else { return };
        let mut payload = Map::new();
        payload.insert(s.id.to_key(), s.info.to_value());
        let payload = Value::Object(payload);
        for other in self.local_sessions_in_order() {
            if other != r {
                self.send(cx, other, name::S_INFO_CHANGE, payload.clone());
            }
        }
    }
}
