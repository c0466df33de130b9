//! A router's consumers: made for each subscriber of each producer, announced with
//! `INIT_CONSUMER`, paused and resumed, closed.

use super::Router;
use crate::protocol::messages::{MediaType, name};
use crate::sfu::command::{SessionEvent, ShardEvent};
use crate::sfu::consumer::{Consumer, ConsumerKey, ConsumerSpec, Egress, PROBATOR_SSRC, RETRY_DELAY};
use crate::sfu::context::Context;
use crate::sfu::forward::direct::{DirectExtensions, DirectStream, RtxStream};
use crate::sfu::ids::SessionRef;
use crate::sfu::ortc::caps::uri;
use crate::sfu::ortc::consumer_params::{self, ConsumerIdentity};
use crate::sfu::outputs::Timer;
use crate::sfu::producer::ProducerKey;
use crate::sfu::session::Pending;
use rand::Rng;
use serde_json::json;
use smallvec::SmallVec;
use std::time::Instant;
use str0m::media::{MediaKind, Mid};

impl Router {
    /// Makes sure `subscriber` consumes every producer of `publisher` (upstream's `consume`).
    pub(crate) fn consume(&mut self, cx: &mut Context, subscriber: SessionRef, publisher: SessionRef) {
        if subscriber == publisher {
            return;
        }
        let (Some(sub), Some(publ)) = (self.sessions.get(&subscriber), self.sessions.get(&publisher)) else {
            return;
        };
        // Another part's session consumes on its own part.
        if !sub.connected || !publ.connected || sub.remote.is_some() {
            return;
        }
        let producers: SmallVec<[ProducerKey; 3]> = publ.producers.iter().flatten().copied().collect();
        for pk in producers {
            if self.sessions[&subscriber].consumers.contains_key(&pk) {
                continue;
            }
            if !self.create_consumer(cx, subscriber, pk) {
                // Upstream skips the remaining types after a failure and retries them all later.
                break;
            }
        }
    }

    /// Creates one consumer and announces it with `INIT_CONSUMER`. `false` if it could not be
    /// announced (the caller stops there); `true` if created or if the device simply cannot
    /// receive this producer.
    fn create_consumer(&mut self, cx: &mut Context, subscriber: SessionRef, pk: ProducerKey) -> bool {
        let s = &self.sessions[&subscriber];
        let (Some(stc), Some(device)) = (s.stc, s.device.as_ref()) else {
            // No usable capabilities: nothing is ever consumed, as upstream.
            return true;
        };
        let p = &self.producers[pk];
        let t = &mut cx.transports[stc];
        let mid_text = t.next_mid.to_string();
        let ssrc = loop {
            let candidate: u32 = cx.rng.random();
            let rtx = candidate.wrapping_add(1);
            if candidate > 1 && rtx > 1 && ![candidate, rtx].contains(&PROBATOR_SSRC) {
                break candidate;
            }
        };
        let Some(params) = consumer_params::derive(
            &cx.settings.router,
            &p.params,
            device,
            ConsumerIdentity { mid: &mid_text, ssrc, rtx_ssrc: ssrc.wrapping_add(1), cname: &p.cname },
        ) else {
            return true;
        };
        let t = &mut cx.transports[stc];
        t.next_mid += 1;
        let mid = Mid::from(mid_text.as_str());
        let rtx_ssrc = params.rtx.then(|| ssrc.wrapping_add(1));
        let Some(rtc) = t.rtc.as_mut() else { return true };
        rtc.direct_api().declare_media(mid, p.kind());
        let router_id = |negotiated: bool, uri: &str| {
            negotiated.then(|| cx.settings.router.extension_id(p.kind(), uri)).flatten().map(|e| e.id)
        };
        let direct_extensions = DirectExtensions {
            mid: router_id(params.extensions.mid, uri::MID),
            audio_level: router_id(params.extensions.audio_level, uri::AUDIO_LEVEL),
            twcc: router_id(params.extensions.twcc, uri::TWCC),
            video_orientation: router_id(params.extensions.video_orientation, uri::VIDEO_ORIENTATION),
        };

        let id = cx.random_uuid();
        let munger_seed = cx.rng.random::<u64>();
        let p = &self.producers[pk];
        let payload = json!({
            "id": id.to_string(),
            "kind": crate::sfu::ortc::caps::kind_str(p.kind()),
            "producerId": p.id.to_string(),
            "rtpParameters": params.json,
            "sessionId": self.sessions[&p.session].id.to_value(),
            "active": !p.paused,
            "type": p.media.as_str(),
        });
        let consumer = Consumer::new(ConsumerSpec {
            id,
            session: subscriber,
            producer: pk,
            transport: stc,
            media: p.media,
            kind: p.kind(),
            mid,
            ssrc,
            rtx_ssrc,
            codecs: params.codecs.iter().copied().collect(),
            extensions: params.extensions,
            direct_extensions,
            clock_rate: p.clock_rate,
            vp8: p.params.codecs[0].mime == crate::sfu::ortc::Mime::Vp8,
            layers: p.layers.len(),
            munger_seed,
        });
        let ck = self.consumers.insert(consumer);
        // ringsfu's own egress or str0m's: decided once the transport's SRTP keys are known.
        if cx.transports[stc].connected {
            self.decide_egress(cx, ck);
        }
        // The media declaration above mutated the `Rtc`: poll it, as str0m requires.
        cx.drain(stc);
        self.producers[pk].consumers.push(ck);
        cx.transports[stc].consumers_by_mid.insert(mid, ck);
        let token = cx.next_token();
        let s = self.sessions.get_mut(&subscriber).expect("checked above");
        s.consumers.insert(pk, ck);
        s.pending.insert(token, Pending::InitConsumer(ck));
        cx.out.events.push_back(ShardEvent::ToSession(
            subscriber,
            SessionEvent::Request { token, name: name::INIT_CONSUMER, payload, batch: true },
        ));
        true
    }

    /// Picks the egress of a consumer whose transport has its SRTP keys.
    pub(crate) fn decide_egress(&mut self, cx: &mut Context, ck: ConsumerKey) {
        let Some(c) = self.consumers.get_mut(ck) else { return };
        if !matches!(c.egress, Egress::Undecided) {
            return;
        }
        let own = match c.kind {
            MediaKind::Audio => cx.settings.own_audio_egress,
            MediaKind::Video => cx.settings.own_video_egress,
        };
        let direct = own && cx.transports.get(c.transport).is_some_and(|t| t.srtp.is_some());
        if direct {
            let mut stream = DirectStream::new(c.ssrc, &c.mid.to_string(), c.direct_extensions, c.clock_rate);
            let rtx_types: SmallVec<[(u8, u8); 2]> =
                c.codecs.iter().filter_map(|(pt, rtx)| rtx.map(|rtx| (*pt, rtx))).collect();
            if let (Some(ssrc), false) = (c.rtx_ssrc, rtx_types.is_empty()) {
                stream.rtx = Some(RtxStream::new(ssrc, rtx_types, cx.rng.random()));
            }
            c.egress = Egress::Direct(Box::new(stream));
        } else {
            c.egress = Egress::Str0m;
            self.declare_str0m_stream(cx, ck);
        }
    }

    /// Declares a consumer's stream on its transport's `Rtc`: str0m sends it.
    fn declare_str0m_stream(&mut self, cx: &mut Context, ck: ConsumerKey) {
        let Some(c) = self.consumers.get(ck) else { return };
        let (ssrc, rtx, mid, transport) = (c.ssrc, c.rtx_ssrc, c.mid, c.transport);
        let Some(t) = cx.transports.get_mut(transport) else { return };
        t.str0m_streams += 1;
        let Some(rtc) = t.rtc.as_mut() else { return };
        // Unpaced: a forwarded packet leaves in the wake-up that received it. The publisher's
        // encoder already paces its frames; str0m's leaky bucket would hold video back for up to
        // a burst interval per subscriber (the broadcast's latency tail). TWCC still runs.
        rtc.direct_api().declare_stream_tx(ssrc.into(), rtx.map(Into::into), mid, None).set_unpaced(true);
        cx.drain(transport);
    }

    /// The subscriber answered `INIT_CONSUMER`: media may flow.
    pub(crate) fn consumer_acked(&mut self, cx: &mut Context, now: Instant, ck: ConsumerKey) {
        let Some(c) = self.consumers.get_mut(ck) else { return };
        c.acked = true;
        let transport = c.transport;
        self.consumer_state_changed(cx, now, ck);
        self.allocate(cx, now, transport);
    }

    /// `INIT_CONSUMER` failed: drop the consumer, count the error, try again later.
    pub(crate) fn consumer_failed(&mut self, cx: &mut Context, now: Instant, ck: ConsumerKey) {
        let Some(c) = self.consumers.get(ck) else { return };
        let subscriber = c.session;
        let publisher = self.producers.get(c.producer).map(|p| p.session);
        self.close_consumer(cx, ck);
        let Some(publisher) = publisher else { return };
        if !self.count_error(cx, subscriber, "consumer creation failed") {
            return;
        }
        let Some(s) = self.sessions.get_mut(&subscriber) else { return };
        if s.retrying.insert(publisher) {
            cx.out.timers.schedule(now + RETRY_DELAY, Timer::ConsumerRetry(subscriber, publisher));
        }
    }

    pub(crate) fn consumer_retry(&mut self, cx: &mut Context, subscriber: SessionRef, publisher: SessionRef) {
        let Some(s) = self.sessions.get_mut(&subscriber) else { return };
        if !s.retrying.remove(&publisher) {
            return;
        }
        self.consume(cx, subscriber, publisher);
    }

    /// `CONSUMPTION_CHANGE`: the subscriber pauses or resumes what it gets from `publisher_id`.
    pub(crate) fn consumption_change(
        &mut self,
        cx: &mut Context,
        now: Instant,
        subscriber: SessionRef,
        publisher_id: &crate::protocol::SessionId,
        states: &[(MediaType, bool)],
    ) {
        let Some(_s) = self.sessions.get(&subscriber) else { return };
        let Some(publisher) = self.members.get(publisher_id).copied() else {
            return;
        };
        for &(media, active) in states {
            let Some(pk) = self.sessions.get(&publisher).and_then(|p| p.producers[media.index()]) else { continue };
            let Some(&ck) = self.sessions[&subscriber].consumers.get(&pk) else { continue };
            let c = &mut self.consumers[ck];
            if c.paused_by_subscriber == active {
                c.paused_by_subscriber = !active;
                self.consumer_state_changed(cx, now, ck);
            }
        }
    }

    /// A consumer was paused or resumed (by either side) or acknowledged: only active consumers
    /// are on their producer's fan-out list (a paused one costs nothing per packet); a resumed one
    /// restarts at a keyframe with fresh anchors.
    pub(crate) fn consumer_state_changed(&mut self, cx: &mut Context, now: Instant, ck: ConsumerKey) {
        let Some(c) = self.consumers.get_mut(ck) else { return };
        let Some(p) = self.producers.get_mut(c.producer) else { return };
        let active = c.acked && !c.paused_by_subscriber;
        let listed = p.forwarding.iter().position(|k| *k == ck);
        match (active, listed) {
            (true, None) => p.forwarding.push(ck),
            (false, Some(i)) => {
                p.forwarding.swap_remove(i);
            }
            _ => {}
        }
        if !c.is_active(p.paused) {
            return;
        }
        c.current = None;
        c.munger.rebase();
        if let Some(v) = c.vp8.as_mut() {
            v.rebase();
        }
        if let (MediaKind::Video, Some(target)) = (c.kind, c.target) {
            let producer = c.producer;
            self.request_keyframe(cx, now, producer, target);
        }
    }

    /// Removes a consumer from its producer, its subscriber and the subscriber's transport.
    pub(crate) fn close_consumer(&mut self, cx: &mut Context, ck: ConsumerKey) {
        let Some(c) = self.consumers.remove(ck) else { return };
        if let Some(p) = self.producers.get_mut(c.producer) {
            p.consumers.retain(|k| *k != ck);
            p.forwarding.retain(|k| *k != ck);
        }
        if let Some(s) = self.sessions.get_mut(&c.session) {
            if s.consumers.get(&c.producer) == Some(&ck) {
                s.consumers.remove(&c.producer);
            }
            s.pending.retain(|_, p| *p != Pending::InitConsumer(ck));
        }
        if let Some(t) = cx.transports.get_mut(c.transport) {
            t.consumers_by_mid.remove(&c.mid);
            if matches!(c.egress, Egress::Str0m) {
                t.str0m_streams = t.str0m_streams.saturating_sub(1);
            }
            if let Some(rtc) = t.rtc.as_mut() {
                rtc.direct_api().remove_media(c.mid);
                cx.drain(c.transport);
            }
        }
    }
}
