//! Everything one shard core owns, and its four entry points: `handle_command`,
//! `handle_datagram`, `handle_timeout`, then `poll_transmit` / `poll_event` / `next_timeout`.
//!
//! Each entry point ends by settling: events the `Rtc`s produced are handled (which may write to
//! other `Rtc`s), and every `Rtc` that got RTP to send is given the time to send it, until
//! nothing is left to do. Only then does the driver poll the outputs.

use super::channel::Channel;
use super::command::{Command, Reply, ShardEvent};
use super::consumer::{Consumer, ConsumerKey, Egress};
use super::demux::Demux;
use super::ids::{ChannelId, SessionRef};
use super::ingress::Ingress;
use super::producer::{Producer, ProducerKey};
use super::session::Session;
use super::settings::SfuSettings;
use super::srtp::{SrtcpReceiver, SrtpSender};
use super::timer::Timers;
use super::transport::{Transport, TransportKey};
use crate::protocol::CloseCode;
use crate::protocol::messages::Direction;
use crate::sfu::arena::Arena;
use crate::sfu::counters::{DropReason, LocalCounters};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use str0m::net::{DatagramSend, Protocol};
use str0m::{Event, IceConnectionState, Output};

/// What a deadline of the timer table is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    Rtc(TransportKey),
    SessionConnect(SessionRef),
    ConsumerRetry(SessionRef, SessionRef),
    ChannelClose(ChannelId),
    /// Every subscriber's allocation is re-planned.
    Bandwidth,
    /// Sender reports of the streams ringsfu sends itself.
    Reports,
    /// A transport lost ICE consent this long ago: its session goes unless it came back.
    ConsentLost(TransportKey),
    /// A sending transport's bandwidth estimator asked for the time (probe pacing, checks).
    Congestion(TransportKey),
    /// A receiving transport with ringsfu's own ingress owes its publisher feedback, a NACK or
    /// a report.
    Ingress(TransportKey),
}

/// How often the streams ringsfu sends itself are checked for a due sender report.
const REPORT_TICK: std::time::Duration = std::time::Duration::from_millis(250);
/// Send buffers kept for reuse: enough for a burst of a few thousand datagrams. With
/// `MAX_SPARE_CAPACITY` this bounds the pool at 16 MiB per shard.
const SPARE_BUFFERS: usize = 4096;
/// A new send buffer's capacity: any datagram we send.
const BUFFER_CAPACITY: usize = 1500;
/// Larger buffers handed back are freed rather than kept.
const MAX_SPARE_CAPACITY: usize = 4096;

/// The shard's output queues, kept apart from its objects so the packet path can borrow both.
pub struct Outputs {
    pub timers: Timers<Timer>,
    pub transmits: VecDeque<(SocketAddr, DatagramSend)>,
    pub rtc_events: VecDeque<(TransportKey, Event)>,
    pub events: VecDeque<ShardEvent>,
    pub pokes: Vec<TransportKey>,
    pub counters: LocalCounters,
    /// Sent datagrams' buffers, handed back by the driver for the packets ringsfu writes.
    spare: Vec<Vec<u8>>,
}

impl Outputs {
    /// Moves everything an `Rtc` has to say into the queues. Called after every mutation of an
    /// `Rtc`, as str0m requires.
    pub fn drain(&mut self, key: TransportKey, t: &mut Transport) {
        let Some(rtc) = t.rtc.as_mut() else { return };
        loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(at)) => {
                    t.timeout = Some(at);
                    // An `Rtc` moves its deadline later after nearly every packet (its pacer
                    // wants a look 40 ms after the last): the table is touched only when the
                    // deadline comes earlier than the armed one, and a later one is re-armed
                    // when the armed one fires.
                    if t.armed.is_none_or(|armed| at < armed) {
                        t.armed = Some(at);
                        self.timers.schedule(at, Timer::Rtc(key));
                    }
                    return;
                }
                Ok(Output::Transmit(transmit)) => {
                    if !super::demux::is_stun(&transmit.contents) {
                        // DTLS and RTCP go where str0m's ICE agent sends media.
                        t.media_dest = Some(transmit.destination);
                    }
                    self.transmits.push_back((transmit.destination, transmit.contents))
                }
                Ok(Output::Event(event)) => self.rtc_events.push_back((key, event)),
                Err(e) => {
                    tracing::debug!(transport = %t.id, error = %e, "transport failed");
                    rtc.disconnect();
                    return;
                }
            }
        }
    }

    /// An empty send buffer: a spare one, else a new one.
    fn buffer(&mut self) -> Vec<u8> {
        self.spare.pop().unwrap_or_else(|| Vec::with_capacity(BUFFER_CAPACITY))
    }

    /// Queues a datagram ringsfu writes itself to `dest`: `write` fills a spare buffer and says
    /// whether there is anything to send (if not, the buffer goes straight back).
    pub fn transmit_with(&mut self, dest: SocketAddr, write: impl FnOnce(&mut Vec<u8>) -> bool) -> bool {
        let mut buf = self.buffer();
        if write(&mut buf) {
            self.transmits.push_back((dest, buf.into()));
            true
        } else {
            self.recycle(buf);
            false
        }
    }

    /// Takes back a sent datagram's buffer for reuse (up to `SPARE_BUFFERS`).
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        let capacity = buffer.capacity();
        if self.spare.len() < SPARE_BUFFERS && (BUFFER_CAPACITY..=MAX_SPARE_CAPACITY).contains(&capacity) {
            self.spare.push(buffer);
        }
    }

    /// Notes that an `Rtc` has RTP queued, released by an `Input::Timeout` before idling.
    pub fn needs_poke(&mut self, key: TransportKey, t: &mut Transport) {
        if !t.needs_poke {
            t.needs_poke = true;
            self.pokes.push(key);
        }
    }
}

pub struct Shard {
    pub(crate) index: usize,
    pub(crate) settings: Arc<SfuSettings>,
    /// The address announced in candidates (`PUBLIC_IP:port`); str0m wants it as destination.
    pub(crate) local_addr: SocketAddr,
    pub(crate) channels: HashMap<ChannelId, Channel>,
    pub(crate) sessions: HashMap<SessionRef, Session>,
    pub(crate) transports: Arena<Transport>,
    pub(crate) producers: Arena<Producer>,
    pub(crate) consumers: Arena<Consumer>,
    pub(crate) demux: Demux<TransportKey>,
    pub(crate) out: Outputs,
    pub(crate) last_now: Instant,
    pub(crate) last_remb: Option<Instant>,
    /// Where a subscriber's SRTCP is opened (one datagram at a time, reused).
    pub(crate) rtcp_scratch: Vec<u8>,
    /// Where subscribers' bandwidth plans are made (reused).
    pub(crate) plan: super::bandwidth::PlanScratch,
    pub(crate) rng: StdRng,
    next_token: u64,
}

impl Shard {
    /// `seed`: the shard's own randomness (ICE credentials, SSRCs, sequence starts, ids) comes
    /// from it, so a simulation run twice with one seed makes the same choices.
    pub fn new(index: usize, settings: Arc<SfuSettings>, local_addr: SocketAddr, now: Instant, seed: u64) -> Shard {
        let mut timers = Timers::default();
        timers.schedule(now + super::bandwidth::ALLOCATION_INTERVAL, Timer::Bandwidth);
        timers.schedule(now + REPORT_TICK, Timer::Reports);
        Shard {
            index,
            settings,
            local_addr,
            channels: HashMap::new(),
            sessions: HashMap::new(),
            transports: Arena::default(),
            producers: Arena::default(),
            consumers: Arena::default(),
            demux: Demux::default(),
            out: Outputs {
                timers,
                transmits: VecDeque::with_capacity(256),
                rtc_events: VecDeque::with_capacity(256),
                events: VecDeque::new(),
                pokes: Vec::with_capacity(64),
                counters: LocalCounters::default(),
                spare: Vec::new(),
            },
            last_now: now,
            last_remb: None,
            rtcp_scratch: Vec::with_capacity(1500),
            plan: Default::default(),
            rng: StdRng::seed_from_u64(seed),
            next_token: 0,
        }
    }

    pub fn handle_command(&mut self, now: Instant, command: Command) -> Reply {
        self.last_now = now;
        let reply = match command {
            Command::CreateChannel { channel, webrtc } => {
                self.create_channel(now, channel, webrtc);
                Reply::Done
            }
            Command::Join { channel, session, session_id } => self.join(now, channel, session, session_id),
            Command::Leave { session } => {
                self.leave(now, session);
                Reply::Done
            }
            Command::FromClient { session, request, message } => {
                self.client_message(now, session, request, message);
                Reply::Done
            }
            Command::ClientReply { session, token, result } => {
                self.client_reply(now, session, token, result);
                Reply::Done
            }
            Command::Kick { channel, session_ids } => {
                self.kick(now, channel, &session_ids);
                Reply::Done
            }
            Command::Stats => Reply::Stats(self.stats(now)),
            Command::Inspect { channel } => Reply::Inspect(self.inspect(now, channel)),
            Command::CloseAll => {
                let channels: Vec<ChannelId> = self.channels.keys().copied().collect();
                for id in channels {
                    for r in self.channel_sessions(id) {
                        self.close_session(now, r, CloseCode::GoingAway, "server shutting down", false);
                    }
                    self.channels.remove(&id);
                    self.out.events.push_back(ShardEvent::ChannelClosed(id));
                }
                Reply::Done
            }
            Command::Ping => Reply::Pong,
        };
        self.settle(now);
        reply
    }

    /// One datagram from `source`, which came by `proto` (UDP, or an RFC 4571 frame of an ICE-TCP
    /// connection whose peer is `source`). Call `settle` (or any other entry point) after a batch.
    pub fn handle_datagram(&mut self, now: Instant, proto: Protocol, source: SocketAddr, data: &[u8]) {
        self.last_now = now;
        self.receive_datagram(now, proto, source, data);
        self.handle_rtc_events(now);
    }

    /// Finishes the work a batch of datagrams started (sends queued RTP).
    pub fn settle(&mut self, now: Instant) {
        loop {
            self.handle_rtc_events(now);
            if self.out.pokes.is_empty() {
                break;
            }
            let pokes = std::mem::take(&mut self.out.pokes);
            for key in &pokes {
                self.poke(now, *key);
            }
            // Keep the allocation for the next round.
            let mut pokes = pokes;
            pokes.clear();
            if self.out.pokes.is_empty() {
                self.out.pokes = pokes;
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        while let Some((at, timer)) = self.out.timers.pop_due(now) {
            match timer {
                Timer::Rtc(key) => self.transport_timeout(now, key, at),
                Timer::SessionConnect(r) => self.connect_timeout(now, r, at),
                Timer::ConsumerRetry(sub, publ) => self.consumer_retry(sub, publ),
                Timer::ChannelClose(id) => self.channel_timeout(now, id, at),
                Timer::Bandwidth => self.bandwidth_tick(now),
                Timer::ConsentLost(key) => self.consent_timeout(now, key),
                Timer::Congestion(key) => self.congestion_timeout(now, key),
                Timer::Ingress(key) => self.ingress_timeout(now, key),
                Timer::Reports => {
                    self.sender_reports(now);
                    self.out.timers.schedule(now + REPORT_TICK, Timer::Reports);
                }
            }
            self.handle_rtc_events(now);
        }
        self.settle(now);
    }

    /// The next outgoing datagram: (destination, contents).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, DatagramSend)> {
        let t = self.out.transmits.pop_front()?;
        self.out.counters.packets_out += 1;
        self.out.counters.bytes_out += t.1.len() as u64;
        Some(t)
    }

    pub fn poll_event(&mut self) -> Option<ShardEvent> {
        self.out.events.pop_front()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        self.out.timers.next()
    }

    /// RTP packets forwarded so far (the driver times its batches by it).
    pub fn rtp_forwarded(&self) -> u64 {
        self.out.counters.rtp_forwarded
    }

    /// Counts a datagram the driver dropped before or after the core saw it.
    pub fn count_drop(&mut self, reason: DropReason) {
        self.out.counters.drop(reason);
    }

    /// Datagrams waiting for `poll_transmit` (the driver sends a batch out in parts past a bound).
    pub fn queued_transmits(&self) -> usize {
        self.out.transmits.len()
    }

    /// Takes back a sent datagram's buffer, for the packets ringsfu writes itself.
    pub fn recycle(&mut self, buffer: Vec<u8>) {
        self.out.recycle(buffer);
    }

    /// Read-only views for simulations and tests; the objects are the core's.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.keys().copied()
    }

    pub fn transports(&self) -> impl Iterator<Item = (TransportKey, &Transport)> {
        self.transports.iter()
    }

    pub fn transport(&self, key: TransportKey) -> Option<&Transport> {
        self.transports.get(key)
    }

    pub fn producer(&self, key: ProducerKey) -> Option<&Producer> {
        self.producers.get(key)
    }

    pub fn producers(&self) -> impl Iterator<Item = (ProducerKey, &Producer)> {
        self.producers.iter()
    }

    pub fn consumers(&self) -> impl Iterator<Item = (ConsumerKey, &Consumer)> {
        self.consumers.iter()
    }

    /// A consumer to steer, for simulations that pin its layer (the allocator would re-plan it).
    pub fn consumer_mut(&mut self, key: ConsumerKey) -> Option<&mut Consumer> {
        self.consumers.get_mut(key)
    }

    /// Counters, with the object gauges filled in.
    pub fn counters(&self) -> LocalCounters {
        let mut c = self.out.counters;
        c.channels = self.channels.len() as u64;
        c.sessions = self.sessions.len() as u64;
        c.transports = self.transports.len() as u64;
        c.producers = self.producers.len() as u64;
        c.consumers = self.consumers.len() as u64;
        c.demux_entries = self.demux.len() as u64;
        c.video_consumers_by_layer = [0; 4];
        for (_, consumer) in self.consumers.iter() {
            if let Some(layer) = consumer.current.filter(|_| consumer.kind == str0m::media::MediaKind::Video) {
                c.video_consumers_by_layer[(layer as usize).min(3)] += 1;
            }
        }
        let estimates: Vec<u64> = self.transports.iter().filter_map(|(_, t)| t.estimate).collect();
        c.estimate_mean_bps =
            if estimates.is_empty() { 0 } else { estimates.iter().sum::<u64>() / estimates.len() as u64 };
        c
    }

    /// Due sender reports of the streams ringsfu sends itself.
    fn sender_reports(&mut self, now: Instant) {
        let wallclock = std::time::SystemTime::now();
        let Shard { consumers, transports, out, .. } = self;
        for (_, c) in consumers.iter_mut() {
            let Egress::Direct(stream) = &mut c.egress else { continue };
            let Some(t) = transports.get_mut(c.transport) else { continue };
            let (Some(srtp), Some(dest)) = (t.srtp.as_mut(), t.media_dest) else { continue };
            out.transmit_with(dest, |buf| stream.sender_report(srtp, buf, now, wallclock));
        }
    }

    pub(crate) fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// A version-4 UUID from the shard's randomness.
    pub(crate) fn random_uuid(&mut self) -> uuid::Uuid {
        uuid::Builder::from_random_bytes(rand::Rng::random(&mut self.rng)).into_uuid()
    }

    fn handle_rtc_events(&mut self, now: Instant) {
        while let Some((key, event)) = self.out.rtc_events.pop_front() {
            self.handle_rtc_event(now, key, event);
        }
    }

    fn handle_rtc_event(&mut self, now: Instant, key: TransportKey, event: Event) {
        match event {
            Event::RtpPacket(packet) => self.forward_rtp(now, key, packet),
            Event::KeyframeRequest(request) => {
                if let Some(&ck) = self.transports.get(key).and_then(|t| t.consumers_by_mid.get(&request.mid)) {
                    self.subscriber_lost_picture(now, ck);
                }
            }
            Event::Connected => {
                let rtcp_ssrc: u32 = rand::Rng::random(&mut self.rng);
                let own_ingress = self.settings.own_ingress;
                let Some(t) = self.transports.get_mut(key) else { return };
                t.connected = true;
                if let Some(joined) = self.sessions.get_mut(&t.session).and_then(|s| s.joined_at.take()) {
                    self.out.counters.joins.record(now.saturating_duration_since(joined).as_millis() as u64, 1);
                }
                let keys = t.keys.take().and_then(|slot| slot.take());
                if t.direction == Direction::Cts {
                    // The publisher's side: ringsfu's own ingress where it can open the packets;
                    // str0m's receive path otherwise (and its RTCP then goes to str0m too).
                    t.ingress = keys
                        .as_ref()
                        .filter(|_| own_ingress)
                        .and_then(|k| Ingress::new(k, rtcp_ssrc, now))
                        .map(Box::new);
                    if t.ingress.is_some() {
                        t.rtcp_in = keys.as_ref().and_then(SrtcpReceiver::new);
                    }
                } else {
                    t.srtp = keys.as_ref().and_then(SrtpSender::new);
                    t.rtcp_in = keys.as_ref().and_then(SrtcpReceiver::new);
                }
                tracing::debug!(transport = %t.id, direction = ?t.direction, own_srtp = t.srtp.is_some(), "transport connected");
                // Consumers that were waiting for DTLS need a keyframe to start.
                let consumers: Vec<_> = t.consumers_by_mid.values().copied().collect();
                for ck in consumers {
                    self.decide_egress(ck);
                    self.consumer_state_changed(now, ck);
                }
            }
            Event::IceConnectionStateChange(state) => {
                let Some(t) = self.transports.get_mut(key) else { return };
                tracing::debug!(transport = %t.id, ?state, "ICE state");
                if state == IceConnectionState::Disconnected {
                    tracing::info!(transport = %t.id, "transport lost ICE consent (no binding request for 15 s)");
                    t.consent_lost = Some(now);
                    if let Some(grace) = self.settings.consent_timeout {
                        self.out.timers.schedule(now + grace, Timer::ConsentLost(key));
                    }
                } else {
                    t.consent_lost = None;
                }
            }
            // ringsfu's own estimator, where there is one, is the transport's estimate.
            Event::EgressBitrateEstimate(_) if self.transports.get(key).is_some_and(|t| t.estimator.is_some()) => {}
            Event::EgressBitrateEstimate(estimate) => {
                let bps = match estimate {
                    str0m::bwe::BweKind::Twcc { estimate, .. } => estimate.as_u64(),
                    str0m::bwe::BweKind::Remb { estimate, .. } => estimate.as_u64(),
                    _ => return,
                };
                if let Some(t) = self.transports.get_mut(key) {
                    t.estimate = Some(bps);
                }
                self.allocate(now, key);
            }
            _ => {}
        }
    }
}
