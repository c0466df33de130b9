//! A router's sessions: joining, the bus messages of a session (info, broadcast, transports
//! connected), errors, timeouts and leaving.

use super::Router;
use crate::protocol::messages::{ClientMessage, Direction, DtlsParameters, MAX_BROADCAST, name};
use crate::protocol::{CloseCode, RequestId, SessionId};
use crate::sfu::command::{JoinRefused, Reply, RequestFailed, SessionEvent, ShardEvent};
use crate::sfu::consumer::ConsumerKey;
use crate::sfu::context::Context;
use crate::sfu::ids::SessionRef;
use crate::sfu::ortc::DeviceCaps;
use crate::sfu::outputs::Timer;
use crate::sfu::producer::ProducerKey;
use crate::sfu::relay::RelayMessage;
use crate::sfu::session::{CONNECT_TIMEOUT, MAX_ERRORS, Pending, Session};
use crate::sfu::transport::{Transport, TransportKey, build_sending_rtc};
use serde_json::{Map, Value, json};
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

impl Router {
    pub(crate) fn join(&mut self, cx: &mut Context, now: Instant, r: SessionRef, id: SessionId) -> Reply {
        // Upstream checks the size before replacement: a full channel refuses even a rejoin.
        if self.members.len() >= cx.settings.channel_size {
            // A part made for this session alone has nothing left to do.
            if !self.home && self.session_count() == 0 {
                cx.closing.push(self.key);
            }
            return Reply::JoinRefused(JoinRefused::ChannelFull);
        }
        let (channel, webrtc) = (self.id, self.webrtc);
        if let Some(&old) = self.members.get(&id) {
            self.close_session(cx, now, old, CloseCode::Kicked, "replaced by a new connection", true);
        }
        let mut session = Session::joining(id.clone(), channel, webrtc, now);
        self.members.insert(id.clone(), r);
        self.update_close_timer(cx, now);
        tracing::info!(%channel, session = %id, connection = %r, "session joined");

        if webrtc {
            let deadline = now + CONNECT_TIMEOUT;
            session.connect_deadline = Some(deadline);
            cx.out.timers.schedule(deadline, Timer::SessionConnect(r));
            let candidate = cx.local_addr;
            let cts = cx.transports.insert(Transport::new(r, self.key, Direction::Cts, &mut cx.rng));
            let mut stc_transport = Transport::new(r, self.key, Direction::Stc, &mut cx.rng);
            let (rtc, keys) = build_sending_rtc(&cx.settings, &stc_transport.ice, now, candidate);
            stc_transport.rtc = Some(Box::new(rtc));
            stc_transport.keys = keys;
            let stc = cx.transports.insert(stc_transport);
            // Registered before the client can learn the credentials: no STUN finds us unprepared.
            for key in [cts, stc] {
                let ufrag = cx.transports[key].ice.ufrag.clone();
                cx.demux.register_ufrag(&ufrag, key);
            }
            cx.drain(stc);
            session.cts = Some(cts);
            session.stc = Some(stc);
            let payload = json!({
                "capabilities": cx.settings.router.to_json(),
                "stcConfig": cx.transports[stc].options(&cx.settings, candidate),
                "ctsConfig": cx.transports[cts].options(&cx.settings, candidate),
                "producerOptionsByKind": cx.settings.producer_options,
            });
            let token = cx.next_token();
            session.pending.insert(token, Pending::InitTransports);
            cx.out.events.push_back(ShardEvent::ToSession(
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
        cx: &mut Context,
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
                for other in self.sessions_in_order() {
                    if other != r {
                        self.consume(cx, r, other);
                        self.consume(cx, other, r);
                    }
                }
                self.announce_session(cx, r);
            }
            (Pending::InitTransports, Err(_)) => {
                self.close_session(cx, now, r, CloseCode::Error, "no answer to INIT_TRANSPORTS", true);
            }
            (Pending::InitConsumer(ck), Ok(_)) => self.consumer_acked(cx, now, ck),
            (Pending::InitConsumer(ck), Err(_)) => self.consumer_failed(cx, now, ck),
        }
    }

    pub(crate) fn client_message(
        &mut self,
        cx: &mut Context,
        now: Instant,
        r: SessionRef,
        request: Option<RequestId>,
        message: ClientMessage,
    ) {
        if !self.sessions.contains_key(&r) {
            return;
        }
        let result: Result<Option<Value>, String> = match message {
            ClientMessage::Broadcast(payload) => self.broadcast(cx, r, payload).map(|()| None),
            ClientMessage::InfoChange { info, need_refresh } => {
                self.info_change(cx, r, &info, need_refresh);
                Ok(None)
            }
            ClientMessage::ProductionChange { media, active } => {
                self.production_change(cx, now, r, media, active);
                Ok(None)
            }
            ClientMessage::ConsumptionChange { session_id, states } => {
                self.consumption_change(cx, now, r, &session_id, &states);
                Ok(None)
            }
            ClientMessage::ConnectTransport { direction, dtls } => {
                self.connect_transport(cx, r, direction, dtls).map(|()| None)
            }
            ClientMessage::InitProducer { media, kind, rtp_parameters } => {
                let result = self.init_producer(cx, now, r, media, &kind, &rtp_parameters).map(Some);
                if let Err(e) = &result {
                    tracing::info!(connection = %r, error = %e, "INIT_PRODUCER refused");
                    self.count_error(cx, r, e);
                }
                result
            }
        };
        if let Some(id) = request {
            if let Err(e) = &result {
                tracing::debug!(connection = %r, error = %e, "request failed");
            }
            if self.sessions.contains_key(&r) {
                cx.out.events.push_back(ShardEvent::ToSession(r, SessionEvent::Reply { id, result }));
            }
        }
    }

    fn connect_transport(
        &mut self,
        cx: &mut Context,
        r: SessionRef,
        direction: Direction,
        dtls: DtlsParameters,
    ) -> Result<(), String> {
        let s = &self.sessions[&r];
        let key = match direction {
            Direction::Cts => s.cts,
            Direction::Stc => s.stc,
        }
        .ok_or("this channel has no media (webRTC=false)")?;
        if !dtls.fingerprints.iter().any(|(alg, _)| alg == "sha-256" || alg == "sha-1") {
            return Err("dtlsParameters.fingerprints needs a sha-256 or sha-1 fingerprint".into());
        }
        let t = &mut cx.transports[key];
        if t.dtls.is_some() {
            return Err("connect() already called".into());
        }
        for (alg, value) in &dtls.fingerprints {
            if format!("{alg} {value}").parse::<str0m::config::Fingerprint>().is_err() {
                return Err(format!("invalid fingerprint value for {alg}"));
            }
        }
        t.dtls = Some(dtls);
        cx.apply_dtls(key);
        Ok(())
    }

    /// Relays a `BROADCAST` to the rest of the channel. Its JSON is written once and shared by
    /// every receiver's queue; one over [`MAX_BROADCAST`] is refused (and counted as the sender's
    /// error) instead of being multiplied by the channel's size.
    fn broadcast(&mut self, cx: &mut Context, from: SessionRef, message: Value) -> Result<(), String> {
        let s = &self.sessions[&from];
        let payload = json!({"senderId": s.id.to_value(), "message": message}).to_string();
        if payload.len() > MAX_BROADCAST {
            let error = format!("BROADCAST payload over {} KiB", MAX_BROADCAST >> 10);
            self.count_error(cx, from, &error);
            return Err(error);
        }
        let payload: Arc<str> = payload.into();
        for other in self.local_sessions_in_order() {
            if other != from {
                let event = SessionEvent::Broadcast { payload: payload.clone() };
                cx.out.events.push_back(ShardEvent::ToSession(other, event));
            }
        }
        self.relay_to_peers(cx, RelayMessage::Broadcast { from, payload });
        Ok(())
    }

    fn info_change(&mut self, cx: &mut Context, r: SessionRef, update: &Map<String, Value>, need_refresh: bool) {
        let s = self.sessions.get_mut(&r).expect("caller checked");
        s.info.apply(update);
        let others: Vec<SessionRef> = self.sessions_in_order().into_iter().filter(|o| *o != r).collect();
        if need_refresh && !others.is_empty() {
            let mut all = Map::new();
            for o in &others {
                let os = &self.sessions[o];
                all.insert(os.id.to_key(), os.info.to_value());
            }
            self.send(cx, r, name::S_INFO_CHANGE, Value::Object(all));
        }
        self.broadcast_info(cx, r);
    }

    /// `S_INFO_CHANGE {<id>: info}` to every other session of the channel (the other parts'
    /// through their part).
    pub(crate) fn broadcast_info(&mut self, cx: &mut Context, r: SessionRef) {
        self.tell_info(cx, r);
        let Some(s) = self.sessions.get(&r).filter(|s| s.remote.is_none() && s.connected) else { return };
        let message = RelayMessage::Info { session: r, info: s.info };
        self.relay_to_peers(cx, message);
    }

    pub(crate) fn send(&mut self, cx: &mut Context, to: SessionRef, name: &'static str, payload: Value) {
        cx.out.events.push_back(ShardEvent::ToSession(to, SessionEvent::Send { name, payload, batch: true }));
    }

    /// `/v1/disconnect`: close the named sessions of a channel.
    pub(crate) fn kick(&mut self, cx: &mut Context, now: Instant, ids: &[SessionId]) {
        for id in ids {
            // Another part's session is kicked by its own part (the kick goes to every part).
            let Some(&r) = self.members.get(id).filter(|r| self.sessions.get(r).is_some_and(|s| s.remote.is_none()))
            else {
                continue;
            };
            self.close_session(cx, now, r, CloseCode::Kicked, "disconnected by the server", true);
        }
    }

    /// Counts an error; a session with too many is closed. Returns whether it is still open.
    pub(crate) fn count_error(&mut self, cx: &mut Context, r: SessionRef, reason: &str) -> bool {
        let Some(s) = self.sessions.get_mut(&r) else { return false };
        s.errors += 1;
        if s.errors > MAX_ERRORS {
            tracing::warn!(session = %s.id, %reason, "too many errors, closing the session");
            let now = cx.last_now;
            self.close_session(cx, now, r, CloseCode::Error, "too many errors", true);
            return false;
        }
        true
    }

    /// A transport of `key`'s session lost ICE consent a consent timeout ago and did not get it
    /// back: the participant's media is gone while its WebSocket may stay up (a ghost whose tile
    /// freezes for everyone). Closed with 4107, so the others get `SESSION_LEAVE` and a stock client
    /// reconnects (and gets a fresh media path if it has one).
    pub(crate) fn consent_timeout(&mut self, cx: &mut Context, now: Instant, key: TransportKey) {
        let Some(grace) = cx.settings.consent_timeout else { return };
        let Some(t) = cx.transports.get(key) else { return };
        if t.consent_lost.is_none_or(|lost| now < lost + grace) {
            return;
        }
        let r = t.session;
        tracing::info!(connection = %r, transport = %t.id, "closing a session whose media lost ICE consent");
        cx.out.counters.sessions_closed_consent_lost += 1;
        self.close_session(cx, now, r, CloseCode::Timeout, "media connection lost", true);
    }

    pub(crate) fn connect_timeout(&mut self, cx: &mut Context, now: Instant, r: SessionRef, at: Instant) {
        let Some(s) = self.sessions.get(&r) else { return };
        if s.connected || s.connect_deadline != Some(at) {
            return;
        }
        self.close_session(cx, now, r, CloseCode::Timeout, "connection timeout", true);
    }

    /// The WebSocket is gone: forget the session and tell the others.
    pub(crate) fn leave(&mut self, cx: &mut Context, now: Instant, r: SessionRef) {
        self.remove_session(cx, now, r, true);
    }

    /// Closes a session: its WebSocket gets `code`, the others `SESSION_LEAVE` if `announce`.
    pub(crate) fn close_session(
        &mut self,
        cx: &mut Context,
        now: Instant,
        r: SessionRef,
        code: CloseCode,
        reason: impl Into<Cow<'static, str>>,
        announce: bool,
    ) {
        let Some(s) = self.sessions.get(&r) else { return };
        // Another part's session has no connection here: its own part closes it.
        if s.remote.is_none() {
            cx.out.events.push_back(ShardEvent::ToSession(r, SessionEvent::Close { code, reason: reason.into() }));
        }
        self.remove_session(cx, now, r, announce);
    }

    pub(crate) fn remove_session(&mut self, cx: &mut Context, now: Instant, r: SessionRef, announce: bool) {
        let Some(s) = self.sessions.get(&r) else { return };
        let (channel, id, local, connected) = (s.channel, s.id.clone(), s.remote.is_none(), s.connected);
        let producers: Vec<ProducerKey> = s.producers.iter().flatten().copied().collect();
        let consumers: Vec<ConsumerKey> = s.consumers.values().copied().collect();
        let transports: Vec<TransportKey> = [s.cts, s.stc].into_iter().flatten().collect();
        for pk in producers {
            self.close_producer(cx, pk);
        }
        for ck in consumers {
            self.close_consumer(cx, ck);
        }
        for tk in transports {
            cx.close_transport(tk);
        }
        self.sessions.remove(&r);
        if self.members.get(&id) == Some(&r) {
            self.members.remove(&id);
        }
        if local {
            cx.departed.push(r);
            if connected {
                self.relay_to_peers(cx, RelayMessage::Left { session: r });
            }
            if !self.home && self.session_count() == 0 {
                cx.closing.push(self.key);
            }
        }
        tracing::info!(%channel, session = %id, connection = %r, local, "session left");
        if announce {
            let payload = json!({"sessionId": id.to_value()});
            for other in self.local_sessions_in_order() {
                self.send(cx, other, name::SESSION_LEAVE, payload.clone());
            }
        }
        self.update_close_timer(cx, now);
    }
}
