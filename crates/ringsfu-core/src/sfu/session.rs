//! A session: one participant of a channel (one WebSocket), its transports, what it publishes
//! and receives, and the bus behaviour around it (join, info, broadcast, leave).

use super::command::{JoinRefused, Reply, RequestFailed, SessionEvent, ShardEvent};
use super::consumer::ConsumerKey;
use super::ids::{ChannelId, SessionRef};
use super::ortc::DeviceCaps;
use super::producer::ProducerKey;
use super::shard::{Shard, Timer};
use super::transport::{Transport, TransportKey, build_sending_rtc};
use crate::protocol::messages::{ClientMessage, Direction, DtlsParameters, MAX_BROADCAST, name};
use crate::protocol::{CloseCode, RequestId, SessionId, SessionInfo};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A session must answer `INIT_TRANSPORTS` within this time (upstream's session timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Errors a session may cause before it is closed with 1011 (upstream closes on the 7th).
pub const MAX_ERRORS: u32 = 6;

/// A request of ours the client has not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pending {
    InitTransports,
    InitConsumer(ConsumerKey),
}

pub struct Session {
    pub r: SessionRef,
    pub id: SessionId,
    pub channel: ChannelId,
    /// `INIT_TRANSPORTS` answered (at once for channels without media).
    pub connected: bool,
    pub info: SessionInfo,
    pub errors: u32,
    pub connect_deadline: Option<Instant>,
    /// When it joined, until its first transport connects (then the join time is counted).
    pub joined_at: Option<Instant>,
    pub cts: Option<TransportKey>,
    pub stc: Option<TransportKey>,
    /// The device capabilities from the `INIT_TRANSPORTS` reply; `None` when invalid.
    pub device: Option<DeviceCaps>,
    pub producers: [Option<ProducerKey>; 3],
    /// What this session receives, by producer.
    pub consumers: HashMap<ProducerKey, ConsumerKey>,
    pub pending: HashMap<u64, Pending>,
    /// Publishing sessions with a consumer-creation retry scheduled (at most one each).
    pub retrying: HashSet<SessionRef>,
}

impl Shard {
    pub(crate) fn join(&mut self, now: Instant, channel: ChannelId, r: SessionRef, id: SessionId) -> Reply {
        let Some(ch) = self.channels.get(&channel) else {
            return Reply::JoinRefused(JoinRefused::UnknownChannel);
        };
        // Upstream checks the size before replacement: a full channel refuses even a rejoin.
        if ch.sessions.len() >= self.settings.channel_size {
            return Reply::JoinRefused(JoinRefused::ChannelFull);
        }
        let webrtc = ch.webrtc;
        if let Some(&old) = ch.sessions.get(&id) {
            self.close_session(now, old, CloseCode::Kicked, "replaced by a new connection", true);
        }
        let mut session = Session {
            r,
            id: id.clone(),
            channel,
            connected: !webrtc,
            info: SessionInfo::default(),
            errors: 0,
            connect_deadline: None,
            joined_at: webrtc.then_some(now),
            cts: None,
            stc: None,
            device: None,
            producers: [None; 3],
            consumers: HashMap::new(),
            pending: HashMap::new(),
            retrying: HashSet::new(),
        };
        let ch = self.channels.get_mut(&channel).expect("checked above");
        ch.sessions.insert(id.clone(), r);
        self.update_channel_timer(now, channel);
        tracing::info!(%channel, session = %id, connection = %r, "session joined");

        if webrtc {
            let deadline = now + CONNECT_TIMEOUT;
            session.connect_deadline = Some(deadline);
            self.out.timers.schedule(deadline, Timer::SessionConnect(r));
            let candidate = self.local_addr;
            let cts = self.transports.insert(Transport::new(r, Direction::Cts, &mut self.rng));
            let mut stc_transport = Transport::new(r, Direction::Stc, &mut self.rng);
            let (rtc, keys) = build_sending_rtc(&self.settings, &stc_transport.ice, now, candidate);
            stc_transport.rtc = Some(Box::new(rtc));
            stc_transport.keys = keys;
            let stc = self.transports.insert(stc_transport);
            // Registered before the client can learn the credentials: no STUN finds us unprepared.
            for key in [cts, stc] {
                let ufrag = self.transports[key].ice.ufrag.clone();
                self.demux.register_ufrag(&ufrag, key);
            }
            self.drain(stc);
            session.cts = Some(cts);
            session.stc = Some(stc);
            let payload = json!({
                "capabilities": self.settings.router.to_json(),
                "stcConfig": self.transports[stc].options(&self.settings, candidate),
                "ctsConfig": self.transports[cts].options(&self.settings, candidate),
                "producerOptionsByKind": self.settings.producer_options,
            });
            let token = self.next_token();
            session.pending.insert(token, Pending::InitTransports);
            self.out.events.push_back(ShardEvent::ToSession(
                r,
                SessionEvent::Request { token, name: name::INIT_TRANSPORTS, payload, batch: false },
            ));
        }
        self.sessions.insert(r, session);
        Reply::Joined
    }

    /// The client's answer to one of our requests.
    pub(crate) fn client_reply(
        &mut self,
        now: Instant,
        r: SessionRef,
        token: u64,
        result: Result<Value, RequestFailed>,
    ) {
        let Some(s) = self.sessions.get_mut(&r) else { return };
        let Some(pending) = s.pending.remove(&token) else { return };
        match (pending, result) {
            (Pending::InitTransports, Ok(caps)) => {
                // Stored as-is upstream; invalid capabilities mean nothing can be consumed.
                s.device = DeviceCaps::parse(&caps);
                if s.device.is_none() {
                    tracing::warn!(session = %s.id, "INIT_TRANSPORTS reply is not valid RtpCapabilities; nothing will be consumed");
                }
                s.connected = true;
                s.connect_deadline = None;
                tracing::info!(session = %s.id, channel = %s.channel, "session connected");
                let channel = s.channel;
                for other in self.channel_sessions(channel) {
                    if other != r {
                        self.consume(r, other);
                        self.consume(other, r);
                    }
                }
            }
            (Pending::InitTransports, Err(_)) => {
                self.close_session(now, r, CloseCode::Error, "no answer to INIT_TRANSPORTS", true);
            }
            (Pending::InitConsumer(ck), Ok(_)) => self.consumer_acked(now, ck),
            (Pending::InitConsumer(ck), Err(_)) => self.consumer_failed(now, ck),
        }
    }

    pub(crate) fn client_message(
        &mut self,
        now: Instant,
        r: SessionRef,
        request: Option<RequestId>,
        message: ClientMessage,
    ) {
        if !self.sessions.contains_key(&r) {
            return;
        }
        let result: Result<Option<Value>, String> = match message {
            ClientMessage::Broadcast(payload) => self.broadcast(r, payload).map(|()| None),
            ClientMessage::InfoChange { info, need_refresh } => {
                self.info_change(r, &info, need_refresh);
                Ok(None)
            }
            ClientMessage::ProductionChange { media, active } => {
                self.production_change(now, r, media, active);
                Ok(None)
            }
            ClientMessage::ConsumptionChange { session_id, states } => {
                self.consumption_change(now, r, &session_id, &states);
                Ok(None)
            }
            ClientMessage::ConnectTransport { direction, dtls } => {
                self.connect_transport(r, direction, dtls).map(|()| None)
            }
            ClientMessage::InitProducer { media, kind, rtp_parameters } => {
                let result = self.init_producer(now, r, media, &kind, &rtp_parameters).map(Some);
                if let Err(e) = &result {
                    tracing::info!(connection = %r, error = %e, "INIT_PRODUCER refused");
                    self.count_error(r, e);
                }
                result
            }
        };
        if let Some(id) = request {
            if let Err(e) = &result {
                tracing::debug!(connection = %r, error = %e, "request failed");
            }
            if self.sessions.contains_key(&r) {
                self.out.events.push_back(ShardEvent::ToSession(r, SessionEvent::Reply { id, result }));
            }
        }
    }

    fn connect_transport(&mut self, r: SessionRef, direction: Direction, dtls: DtlsParameters) -> Result<(), String> {
        let s = &self.sessions[&r];
        let key = match direction {
            Direction::Cts => s.cts,
            Direction::Stc => s.stc,
        }
        .ok_or("this channel has no media (webRTC=false)")?;
        if !dtls.fingerprints.iter().any(|(alg, _)| alg == "sha-256" || alg == "sha-1") {
            return Err("dtlsParameters.fingerprints needs a sha-256 or sha-1 fingerprint".into());
        }
        let t = &mut self.transports[key];
        if t.dtls.is_some() {
            return Err("connect() already called".into());
        }
        for (alg, value) in &dtls.fingerprints {
            if format!("{alg} {value}").parse::<str0m::config::Fingerprint>().is_err() {
                return Err(format!("invalid fingerprint value for {alg}"));
            }
        }
        t.dtls = Some(dtls);
        self.apply_dtls(key);
        Ok(())
    }

    /// Relays a `BROADCAST` to the rest of the channel. Its JSON is written once and shared by
    /// every receiver's queue; one over [`MAX_BROADCAST`] is refused (and counted as the sender's
    /// error) instead of being multiplied by the channel's size.
    fn broadcast(&mut self, from: SessionRef, message: Value) -> Result<(), String> {
        let s = &self.sessions[&from];
        let payload = json!({"senderId": s.id.to_value(), "message": message}).to_string();
        if payload.len() > MAX_BROADCAST {
            let error = format!("BROADCAST payload over {} KiB", MAX_BROADCAST >> 10);
            self.count_error(from, &error);
            return Err(error);
        }
        let payload: Arc<str> = payload.into();
        let channel = s.channel;
        for other in self.channel_sessions(channel) {
            if other != from {
                let event = SessionEvent::Broadcast { payload: payload.clone() };
                self.out.events.push_back(ShardEvent::ToSession(other, event));
            }
        }
        Ok(())
    }

    fn info_change(&mut self, r: SessionRef, update: &Map<String, Value>, need_refresh: bool) {
        let s = self.sessions.get_mut(&r).expect("caller checked");
        s.info.apply(update);
        let channel = s.channel;
        let others: Vec<SessionRef> = self.channel_sessions(channel).into_iter().filter(|o| *o != r).collect();
        if need_refresh && !others.is_empty() {
            let mut all = Map::new();
            for o in &others {
                let os = &self.sessions[o];
                all.insert(os.id.to_key(), os.info.to_value());
            }
            self.send(r, name::S_INFO_CHANGE, Value::Object(all));
        }
        self.broadcast_info(r);
    }

    /// `S_INFO_CHANGE {<id>: info}` to every other session of the channel.
    pub(crate) fn broadcast_info(&mut self, r: SessionRef) {
        let s = &self.sessions[&r];
        let mut payload = Map::new();
        payload.insert(s.id.to_key(), s.info.to_value());
        let payload = Value::Object(payload);
        for other in self.channel_sessions(s.channel) {
            if other != r {
                self.send(other, name::S_INFO_CHANGE, payload.clone());
            }
        }
    }

    fn send(&mut self, to: SessionRef, name: &'static str, payload: Value) {
        self.out.events.push_back(ShardEvent::ToSession(to, SessionEvent::Send { name, payload, batch: true }));
    }

    /// `/v1/disconnect`: close the named sessions of a channel.
    pub(crate) fn kick(&mut self, now: Instant, channel: ChannelId, ids: &[SessionId]) {
        for id in ids {
            let Some(&r) = self.channels.get(&channel).and_then(|c| c.sessions.get(id)) else { continue };
            self.close_session(now, r, CloseCode::Kicked, "disconnected by the server", true);
        }
    }

    /// Counts an error; a session with too many is closed. Returns whether it is still open.
    pub(crate) fn count_error(&mut self, r: SessionRef, reason: &str) -> bool {
        let Some(s) = self.sessions.get_mut(&r) else { return false };
        s.errors += 1;
        if s.errors > MAX_ERRORS {
            tracing::warn!(session = %s.id, %reason, "too many errors, closing the session");
            let now = self.last_now;
            self.close_session(now, r, CloseCode::Error, "too many errors", true);
            return false;
        }
        true
    }

    /// A transport of `key`'s session lost ICE consent a consent timeout ago and did not get it
    /// back: the participant's media is gone while its WebSocket may stay up (a ghost whose tile
    /// freezes for everyone). Closed with 4107, so the others get `SESSION_LEAVE` and a stock client
    /// reconnects (and gets a fresh media path if it has one).
    pub(crate) fn consent_timeout(&mut self, now: Instant, key: TransportKey) {
        let Some(grace) = self.settings.consent_timeout else { return };
        let Some(t) = self.transports.get(key) else { return };
        if t.consent_lost.is_none_or(|lost| now < lost + grace) {
            return;
        }
        let r = t.session;
        tracing::info!(connection = %r, transport = %t.id, "closing a session whose media lost ICE consent");
        self.out.counters.sessions_closed_consent_lost += 1;
        self.close_session(now, r, CloseCode::Timeout, "media connection lost", true);
    }

    pub(crate) fn connect_timeout(&mut self, now: Instant, r: SessionRef, at: Instant) {
        let Some(s) = self.sessions.get(&r) else { return };
        if s.connected || s.connect_deadline != Some(at) {
            return;
        }
        self.close_session(now, r, CloseCode::Timeout, "connection timeout", true);
    }

    /// The WebSocket is gone: forget the session and tell the others.
    pub(crate) fn leave(&mut self, now: Instant, r: SessionRef) {
        self.remove_session(now, r, true);
    }

    /// Closes a session: its WebSocket gets `code`, the others `SESSION_LEAVE` if `announce`.
    pub(crate) fn close_session(
        &mut self,
        now: Instant,
        r: SessionRef,
        code: CloseCode,
        reason: impl Into<Cow<'static, str>>,
        announce: bool,
    ) {
        if !self.sessions.contains_key(&r) {
            return;
        }
        self.out.events.push_back(ShardEvent::ToSession(r, SessionEvent::Close { code, reason: reason.into() }));
        self.remove_session(now, r, announce);
    }

    fn remove_session(&mut self, now: Instant, r: SessionRef, announce: bool) {
        let Some(s) = self.sessions.get(&r) else { return };
        let (channel, id) = (s.channel, s.id.clone());
        let producers: Vec<ProducerKey> = s.producers.iter().flatten().copied().collect();
        let consumers: Vec<ConsumerKey> = s.consumers.values().copied().collect();
        let transports: Vec<TransportKey> = [s.cts, s.stc].into_iter().flatten().collect();
        for pk in producers {
            self.close_producer(pk);
        }
        for ck in consumers {
            self.close_consumer(ck);
        }
        for tk in transports {
            self.close_transport(tk);
        }
        self.sessions.remove(&r);
        if let Some(ch) = self.channels.get_mut(&channel)
            && ch.sessions.get(&id) == Some(&r)
        {
            ch.sessions.remove(&id);
        }
        tracing::info!(%channel, session = %id, connection = %r, "session left");
        if announce {
            let payload = json!({"sessionId": id.to_value()});
            for other in self.channel_sessions(channel) {
                self.send(other, name::SESSION_LEAVE, payload.clone());
            }
        }
        self.update_channel_timer(now, channel);
    }
}
