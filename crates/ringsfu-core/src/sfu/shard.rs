//! The endpoint of one shard core (quinn's `Endpoint`): its routers, one per channel, and the
//! transports, demux table, timer table and output queues they share (the [`Context`]). It has
//! four entry points: `handle_command`, `handle_datagram`, `handle_timeout`, then
//! `poll_transmit` / `poll_event` / `next_timeout`.
//!
//! The shard finds who a command, datagram, timer or `Rtc` event is for (a channel, a session,
//! a transport) and hands it to that router with the context. Each entry point ends by
//! settling: events the `Rtc`s produced are handled (which may write to other `Rtc`s), and every
//! `Rtc` that got RTP to send is given the time to send it, until nothing is left to do. Only then
//! does the driver poll the outputs.

use super::arena::Arena;
use super::command::{Command, JoinRefused, Reply, ShardEvent};
use super::consumer::{Consumer, ConsumerKey};
use super::context::Context;
use super::counters::{DropReason, LocalCounters};
use super::demux;
use super::ids::{ChannelId, SessionRef};
use super::outputs::{Outputs, Timer};
use super::producer::{Producer, ProducerKey};
use super::relay::{Relay, RelayMessage};
#[cfg(test)]
use super::router::LONE_CHANNEL_TIMEOUT;
use super::router::{ALLOCATION_INTERVAL, Router, RouterKey};
use super::settings::SfuSettings;
use super::timer::Timers;
use super::transport::{Transport, TransportKey};
use crate::protocol::CloseCode;
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use str0m::net::{DatagramSend, Protocol};

/// How often the streams ringsfu sends itself are checked for a due sender report.
const REPORT_TICK: Duration = Duration::from_millis(250);
/// How often publishers are reminded of `MAX_BITRATE_IN`.
const REMB_INTERVAL: Duration = Duration::from_secs(2);

pub struct Shard {
    cx: Context,
    routers: Arena<Router>,
    by_channel: HashMap<ChannelId, RouterKey>,
    /// The router of each session's bus connection.
    by_session: HashMap<SessionRef, RouterKey>,
    last_remb: Option<Instant>,
}

impl Shard {
    /// `seed`: the shard's own randomness (ICE credentials, SSRCs, sequence starts, ids) comes
    /// from it, so a simulation run twice with one seed makes the same choices.
    pub fn new(index: usize, settings: Arc<SfuSettings>, local_addr: SocketAddr, now: Instant, seed: u64) -> Shard {
        let mut timers = Timers::default();
        timers.schedule(now + ALLOCATION_INTERVAL, Timer::Bandwidth);
        timers.schedule(now + REPORT_TICK, Timer::Reports);
        let out = Outputs::new(timers);
        Shard {
            cx: Context::new(index, settings, local_addr, out, now, StdRng::seed_from_u64(seed)),
            routers: Arena::default(),
            by_channel: HashMap::new(),
            by_session: HashMap::new(),
            last_remb: None,
        }
    }

    pub fn handle_command(&mut self, now: Instant, command: Command) -> Reply {
        self.cx.last_now = now;
        let reply = match command {
            Command::CreateChannel { channel, webrtc } => {
                self.create_channel(now, channel, webrtc);
                Reply::Done
            }
            Command::Join { channel, session, session_id } => match self.by_channel.get(&channel) {
                None => Reply::JoinRefused(JoinRefused::UnknownChannel),
                Some(&rk) => {
                    let reply = self.routers[rk].join(&mut self.cx, now, session, session_id);
                    if matches!(reply, Reply::Joined) {
                        self.by_session.insert(session, rk);
                    }
                    reply
                }
            },
            Command::Leave { session } => {
                self.with_session(session, |router, cx| router.leave(cx, now, session));
                Reply::Done
            }
            Command::FromClient { session, request, message } => {
                self.with_session(session, |router, cx| router.client_message(cx, now, session, request, message));
                Reply::Done
            }
            Command::ClientReply { session, token, result } => {
                self.with_session(session, |router, cx| router.client_reply(cx, now, session, token, result));
                Reply::Done
            }
            Command::Kick { channel, session_ids } => {
                if let Some(&rk) = self.by_channel.get(&channel) {
                    self.routers[rk].kick(&mut self.cx, now, &session_ids);
                }
                Reply::Done
            }
            Command::Stats => Reply::Stats(self.routers.iter().map(|(_, r)| r.stats(now)).collect()),
            Command::Inspect { channel } => Reply::Inspect(
                self.by_channel.get(&channel).and_then(|rk| self.routers.get(*rk)).map(|r| r.inspect(&self.cx, now)),
            ),
            Command::CloseAll => {
                for rk in self.routers.keys() {
                    self.close_router(now, rk, CloseCode::GoingAway, "server shutting down");
                }
                Reply::Done
            }
            Command::Ping => Reply::Pong,
            Command::Meet { channel, webrtc, shards } => {
                if shards.first() == Some(&self.cx.index) && !self.by_channel.contains_key(&channel) {
                    // The channel closed at home a moment ago: the join that follows is refused.
                    return Reply::Done;
                }
                let rk = *self.by_channel.entry(channel).or_insert_with(|| {
                    tracing::info!(%channel, shard = self.cx.index, parts = ?shards, "channel part created");
                    self.routers.insert_with(|key| Router::new(key, channel, webrtc).away_from_home())
                });
                self.routers[rk].meet(&mut self.cx, &shards);
                Reply::Done
            }
        };
        self.settle(now);
        reply
    }

    /// One datagram from `source`, which came by `proto` (UDP, or an RFC 4571 frame of an ICE-TCP
    /// connection whose peer is `source`). Call `settle` (or any other entry point) after a batch.
    pub fn handle_datagram(&mut self, now: Instant, proto: Protocol, source: SocketAddr, data: &[u8]) {
        self.cx.last_now = now;
        self.receive_datagram(now, proto, source, data);
        self.handle_rtc_events(now);
    }

    /// A message from the part of `relay.channel` on shard `from`. A channel with no part here
    /// (it closed meanwhile) ignores it.
    pub fn handle_relay(&mut self, now: Instant, from: usize, relay: Relay) {
        self.cx.last_now = now;
        let Some(&rk) = self.by_channel.get(&relay.channel) else { return };
        if let RelayMessage::Close = relay.message {
            self.close_router(now, rk, CloseCode::Kicked, "channel closed");
            return;
        }
        self.routers[rk].handle_relay(&mut self.cx, now, from, relay.message);
        self.handle_rtc_events(now);
    }

    /// The link to shard `to` could not take `channel`'s messages for long (docs/cross-shard.md):
    /// the part here forgets the part there and closes its own sessions (1011). Nothing more of
    /// the channel goes to `to`; the link carries a `Reset` there in place of what it dropped.
    pub fn lost_relay(&mut self, now: Instant, to: usize, channel: ChannelId) {
        self.cx.last_now = now;
        self.cx.out.relay.retain(|(shard, r)| !(*shard == to && r.channel == channel));
        if let Some(&rk) = self.by_channel.get(&channel) {
            tracing::error!(%channel, shard = self.cx.index, to, "lost touch with the channel's part on another shard");
            self.routers[rk].lost_touch(&mut self.cx, now, to);
        }
        self.settle(now);
    }

    /// The next message to another shard's part of a channel: (shard, message).
    pub fn poll_relay(&mut self) -> Option<(usize, Relay)> {
        self.cx.out.relay.pop_front()
    }

    /// Finishes the work a batch of datagrams started (sends queued RTP).
    pub fn settle(&mut self, now: Instant) {
        loop {
            self.handle_rtc_events(now);
            if self.cx.out.pokes.is_empty() {
                break;
            }
            let pokes = std::mem::take(&mut self.cx.out.pokes);
            for key in &pokes {
                self.cx.poke(now, *key);
            }
            // Keep the allocation for the next round.
            let mut pokes = pokes;
            pokes.clear();
            if self.cx.out.pokes.is_empty() {
                self.cx.out.pokes = pokes;
            }
        }
        for r in self.cx.departed.drain(..) {
            self.by_session.remove(&r);
        }
        while let Some(rk) = self.cx.closing.pop() {
            self.close_router(now, rk, CloseCode::GoingAway, "channel part closed");
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.cx.last_now = now;
        while let Some((at, timer)) = self.cx.out.timers.pop_due(now) {
            match timer {
                Timer::Rtc(key) => self.cx.transport_timeout(now, key, at),
                Timer::SessionConnect(r) => self.with_session(r, |router, cx| router.connect_timeout(cx, now, r, at)),
                Timer::ConsumerRetry(sub, publ) => {
                    self.with_session(sub, |router, cx| router.consumer_retry(cx, sub, publ))
                }
                Timer::ChannelClose(id) => self.channel_timeout(now, id, at),
                Timer::Bandwidth => self.bandwidth_tick(now),
                Timer::ConsentLost(key) => self.with_transport(key, |router, cx| router.consent_timeout(cx, now, key)),
                Timer::Congestion(key) => {
                    self.with_transport(key, |router, cx| router.congestion_timeout(cx, now, key))
                }
                Timer::Ingress(key) => self.with_transport(key, |router, cx| router.ingress_timeout(cx, now, key)),
                Timer::Reports => {
                    let wallclock = std::time::SystemTime::now();
                    for (_, router) in self.routers.iter_mut() {
                        router.sender_reports(&mut self.cx, now, wallclock);
                    }
                    self.cx.out.timers.schedule(now + REPORT_TICK, Timer::Reports);
                }
            }
            self.handle_rtc_events(now);
        }
        self.settle(now);
    }

    /// The next outgoing datagram: (destination, contents).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, DatagramSend)> {
        let out = &mut self.cx.out;
        let t = out.transmits.pop_front()?;
        out.counters.packets_out += 1;
        out.counters.bytes_out += t.1.len() as u64;
        Some(t)
    }

    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.cx.out.events.pop_front()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.cx.out.timers.next()
    }

    /// This shard's index among the process's shards.
    pub fn index(&self) -> usize {
        self.cx.index
    }

    /// RTP packets forwarded so far (the driver times its batches by it).
    pub fn rtp_forwarded(&self) -> u64 {
        self.cx.out.counters.rtp_forwarded
    }

    /// Counts a datagram the driver dropped before or after the core saw it.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.cx.out.counters.drop(reason);
    }

    /// Datagrams waiting for `poll_transmit` (the driver sends a batch out in parts past a bound).
    pub fn queued_transmits(&self) -> usize {
        self.cx.out.transmits.len()
    }

    /// Takes back a sent datagram's buffer, for the packets ringsfu writes itself.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        self.cx.out.recycle(buffer);
    }

    /// Whether datagrams from `addr` reach a transport: it passed ICE (an authenticated binding
    /// request) and is still remembered. The driver closes ICE-TCP connections that never do.
    pub fn routes_address(&self, addr: &SocketAddr) -> bool {
        self.cx.demux.by_addr(addr).is_some()
    }

    /// Forgets a remote address that is gone (its ICE-TCP connection closed): nothing more is
    /// routed from it, and media no longer goes to it.
    pub fn forget_address(&mut self, addr: SocketAddr) {
        let cx = &mut self.cx;
        let Some(key) = cx.demux.by_addr(&addr) else { return };
        cx.demux.forget_addr(&addr, key);
        if let Some(t) = cx.transports.get_mut(key) {
            t.addrs.retain(|a| *a != addr);
            if t.media_dest == Some(addr) {
                t.media_dest = None;
            }
        }
    }

    /// Read-only views for simulations and tests; the objects are the core's.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.by_channel.keys().copied()
    }

    pub fn transports(&self) -> impl Iterator<Item = (TransportKey, &Transport)> {
        self.cx.transports.iter()
    }

    pub fn transport(&self, key: TransportKey) -> Option<&Transport> {
        self.cx.transports.get(key)
    }

    /// Every channel's producers (keys are per channel).
    pub fn producers(&self) -> impl Iterator<Item = (ProducerKey, &Producer)> {
        self.routers.iter().flat_map(|(_, r)| r.producers())
    }

    /// Every channel's consumers (keys are per channel).
    pub fn consumers(&self) -> impl Iterator<Item = (ConsumerKey, &Consumer)> {
        self.routers.iter().flat_map(|(_, r)| r.consumers())
    }

    /// Consumers to steer, for simulations that pin a layer (the allocator would re-plan it).
    pub fn consumers_mut(&mut self) -> impl Iterator<Item = &mut Consumer> {
        self.routers.iter_mut().flat_map(|(_, r)| r.consumers_mut().map(|(_, c)| c))
    }

    /// Counters, with the object gauges filled in.
    pub fn counters(&self) -> LocalCounters {
        let cx = &self.cx;
        let mut c = cx.out.counters;
        c.channels = self.routers.len() as u64;
        c.sessions = self.routers.iter().map(|(_, r)| r.session_count() as u64).sum();
        c.transports = cx.transports.len() as u64;
        c.producers = self.producers().count() as u64;
        c.consumers = self.consumers().count() as u64;
        c.demux_entries = cx.demux.len() as u64;
        c.video_consumers_by_layer = [0; 4];
        for (_, consumer) in self.consumers() {
            if let Some(layer) = consumer.current.filter(|_| consumer.kind == str0m::media::MediaKind::Video) {
                c.video_consumers_by_layer[(layer as usize).min(3)] += 1;
            }
        }
        let estimates: Vec<u64> = cx.transports.iter().filter_map(|(_, t)| t.estimate).collect();
        c.estimate_mean_bps =
            if estimates.is_empty() { 0 } else { estimates.iter().sum::<u64>() / estimates.len() as u64 };
        c
    }

    fn create_channel(&mut self, now: Instant, id: ChannelId, webrtc: bool) {
        if self.by_channel.contains_key(&id) {
            return;
        }
        let rk = self.routers.insert_with(|key| Router::new(key, id, webrtc));
        self.by_channel.insert(id, rk);
        // Armed at creation, as upstream: a channel nobody joins goes away too.
        self.routers[rk].update_close_timer(&mut self.cx, now);
        tracing::info!(channel = %id, webrtc, shard = self.cx.index, "channel created");
    }

    fn channel_timeout(&mut self, now: Instant, id: ChannelId, at: Instant) {
        let Some(&rk) = self.by_channel.get(&id) else { return };
        if self.routers[rk].close_at() != Some(at) {
            return;
        }
        tracing::info!(channel = %id, "channel closed after an hour with at most one session");
        // The home decides for the whole channel (the other parts arm no timer).
        self.routers[rk].relay_to_peers(&mut self.cx, RelayMessage::Close);
        self.close_router(now, rk, CloseCode::Kicked, "channel closed");
    }

    /// Closes every session of a channel (`code`, no `SESSION_LEAVE`) and forgets the channel.
    fn close_router(&mut self, now: Instant, rk: RouterKey, code: CloseCode, reason: &'static str) {
        let Some(router) = self.routers.get_mut(rk) else { return };
        router.close_all(&mut self.cx, now, code, reason);
        router.relay_to_peers(&mut self.cx, RelayMessage::Gone);
        let id = router.id();
        self.routers.remove(rk);
        self.by_channel.remove(&id);
        self.cx.out.events.push_back(ShardEvent::ChannelClosed(id));
    }

    /// A datagram from the network: to the router of the transport it is for.
    fn receive_datagram(&mut self, now: Instant, proto: Protocol, source: SocketAddr, data: &[u8]) {
        let cx = &mut self.cx;
        cx.out.counters.packets_in += 1;
        cx.out.counters.bytes_in += data.len() as u64;
        if !demux::is_webrtc(data) {
            cx.out.counters.drop(DropReason::NotWebRtc);
            return;
        }
        let key = match cx.demux.by_addr(&source) {
            Some(k) => k,
            None => {
                let Some(ufrag) = demux::stun_local_ufrag(data) else {
                    cx.out.counters.drop(DropReason::UnknownSource);
                    return;
                };
                let Some(k) = cx.demux.by_ufrag(ufrag) else {
                    cx.out.counters.drop(DropReason::UnknownUfrag);
                    return;
                };
                k
            }
        };
        self.with_transport(key, |router, cx| router.feed_transport(cx, now, key, proto, source, data));
    }

    /// The periodic planning tick of every subscriber, and `MAX_BITRATE_IN` reminders.
    fn bandwidth_tick(&mut self, now: Instant) {
        let remind = self.last_remb.is_none_or(|t| now.saturating_duration_since(t) >= REMB_INTERVAL);
        if remind {
            self.last_remb = Some(now);
        }
        for (_, router) in self.routers.iter_mut() {
            router.bandwidth_tick(&mut self.cx, now, remind);
        }
        self.cx.out.timers.schedule(now + ALLOCATION_INTERVAL, Timer::Bandwidth);
    }

    fn handle_rtc_events(&mut self, now: Instant) {
        while let Some((key, event)) = self.cx.out.rtc_events.pop_front() {
            self.with_transport(key, |router, cx| router.handle_rtc_event(cx, now, key, event));
        }
    }

    /// Runs `f` on the router of transport `key` (nothing if either is gone).
    fn with_transport(&mut self, key: TransportKey, f: impl FnOnce(&mut Router, &mut Context)) {
        let Some(rk) = self.cx.transports.get(key).map(|t| t.router) else { return };
        if let Some(router) = self.routers.get_mut(rk) {
            f(router, &mut self.cx);
        }
    }

    /// Runs `f` on the router of session `r` (nothing if it is gone).
    fn with_session(&mut self, r: SessionRef, f: impl FnOnce(&mut Router, &mut Context)) {
        let Some(&rk) = self.by_session.get(&r) else { return };
        if let Some(router) = self.routers.get_mut(rk) {
            f(router, &mut self.cx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::SessionId;
    use crate::sfu::settings::Limits;

    fn shard(now: Instant) -> Shard {
        let settings = Arc::new(SfuSettings::new(&Limits::default()));
        Shard::new(0, settings, "127.0.0.1:40000".parse().unwrap(), now, 7)
    }

    fn join(s: &mut Shard, now: Instant, channel: ChannelId, r: u64, id: u64) {
        let session_id = SessionId::from_value(&serde_json::json!(id)).unwrap();
        let reply = s.handle_command(now, Command::Join { channel, session: SessionRef(r), session_id });
        assert!(matches!(reply, Reply::Joined), "{reply:?}");
    }

    /// The shard's indexes (channel → router, bus connection → router) follow the routers: a
    /// session that leaves, is kicked or replaced, and a channel that closes, leave no entry.
    #[test]
    fn every_way_out_of_a_channel_clears_the_shards_indexes() {
        let now = Instant::now();
        let mut s = shard(now);
        let (a, b) = (ChannelId(uuid::Uuid::from_u128(1)), ChannelId(uuid::Uuid::from_u128(2)));
        for channel in [a, b] {
            s.handle_command(now, Command::CreateChannel { channel, webrtc: true });
        }
        join(&mut s, now, a, 1, 10);
        join(&mut s, now, a, 2, 20);
        join(&mut s, now, a, 3, 30);
        join(&mut s, now, b, 4, 40);
        assert_eq!(s.by_session.len(), 4);
        assert_eq!(s.cx.transports.len(), 8);

        s.handle_command(now, Command::Leave { session: SessionRef(1) });
        let kicked = vec![SessionId::from_value(&serde_json::json!(20)).unwrap()];
        s.handle_command(now, Command::Kick { channel: a, session_ids: kicked });
        // Session id 30 again, on a new connection: the old one goes.
        join(&mut s, now, a, 5, 30);
        let mut left: Vec<u64> = s.by_session.keys().map(|r| r.0).collect();
        left.sort_unstable();
        assert_eq!(left, [4, 5]);
        assert_eq!(s.cx.transports.len(), 4);
        assert_eq!(s.counters().sessions, 2);

        // The lone-channel hour closes both channels.
        s.handle_timeout(now + LONE_CHANNEL_TIMEOUT + Duration::from_secs(1));
        assert!(s.by_session.is_empty());
        assert!(s.by_channel.is_empty());
        assert!(s.routers.is_empty());
        assert_eq!(s.cx.transports.len(), 0);
        assert_eq!(s.cx.demux.len(), 0);
    }
}
