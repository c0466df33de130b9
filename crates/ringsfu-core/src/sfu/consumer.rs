//! A consumer: what one subscriber receives of one producer, on the subscriber's sending
//! transport, with its own SSRC, mid and continuous numbering.

use super::arena::Key;
use super::forward::direct::{DirectExtensions, DirectStream, RtxStream};
use super::forward::layer::LayerSelector;
use super::forward::munger::Munger;
use super::forward::vp8::Vp8Rewriter;
use super::ortc::caps::uri;
use super::ortc::consumer_params::{self, ConsumerExtensions, ConsumerIdentity};
use super::producer::ProducerKey;
use super::session::Pending;
use super::shard::{Shard, Timer};
use super::transport::TransportKey;
use crate::protocol::messages::{MediaType, name};
use crate::sfu::command::{SessionEvent, ShardEvent};
use crate::sfu::ids::SessionRef;
use rand::Rng;
use serde_json::json;
use smallvec::SmallVec;
use std::time::{Duration, Instant};
use str0m::media::{MediaKind, Mid};
use uuid::Uuid;

pub type ConsumerKey = Key<Consumer>;

/// Delay before a failed consumer creation is tried again (upstream's recovery timeout).
pub const RETRY_DELAY: Duration = Duration::from_secs(2);
/// SSRC mediasoup-client reserves for its bandwidth probator.
const PROBATOR_SSRC: u32 = 1234;

pub struct Consumer {
    pub id: Uuid,
    /// The subscriber.
    pub session: SessionRef,
    pub producer: ProducerKey,
    pub transport: TransportKey,
    pub media: MediaType,
    pub kind: MediaKind,
    pub mid: Mid,
    pub ssrc: u32,
    pub rtx_ssrc: Option<u32>,
    /// Router payload types the subscriber accepts: (main, rtx).
    pub codecs: SmallVec<[(u8, Option<u8>); 2]>,
    pub extensions: ConsumerExtensions,
    /// The subscriber acknowledged `INIT_CONSUMER`.
    pub acked: bool,
    /// `CONSUMPTION_CHANGE` paused it.
    pub paused_by_subscriber: bool,
    pub munger: Munger,
    /// VP8 picture ids kept continuous across layer switches (VP8 producers only).
    pub vp8: Option<Vp8Rewriter>,
    /// The layer forwarded now; `None` until a keyframe (re)starts the stream.
    pub current: Option<u8>,
    /// The layer the selector wants.
    pub target: Option<u8>,
    pub selector: LayerSelector,
    /// This consumer's share of its subscriber's downlink, bit/s.
    pub budget: u64,
    pub clock_rate: u32,
    /// Who writes this consumer's packets.
    pub egress: Egress,
    pub direct_extensions: DirectExtensions,
}

/// Who writes a consumer's packets.
#[derive(Debug)]
pub enum Egress {
    /// str0m's send path (queue, pacer, NACK/RTX, TWCC, reports): consumers on transports whose
    /// SRTP profile ringsfu does not seal itself, or with `OWN_*_EGRESS` off.
    Str0m,
    /// ringsfu's own (`forward::direct`): consumers on AES-GCM transports.
    Direct(Box<DirectStream>),
    /// The transport has no SRTP keys yet.
    Undecided,
}

impl Consumer {
    /// Whether the producer's packets go to this subscriber now.
    pub fn is_active(&self, producer_paused: bool) -> bool {
        self.acked && !self.paused_by_subscriber && !producer_paused
    }

    pub fn payload_type_for(&self, router_pt: u8) -> Option<u8> {
        self.codecs.iter().find(|(pt, _)| *pt == router_pt).map(|(pt, _)| *pt)
    }
}

impl Shard {
    /// Makes sure `subscriber` consumes every producer of `publisher` (upstream's `consume`).
    pub(crate) fn consume(&mut self, subscriber: SessionRef, publisher: SessionRef) {
        if subscriber == publisher {
            return;
        }
        let (Some(sub), Some(publ)) = (self.sessions.get(&subscriber), self.sessions.get(&publisher)) else {
            return;
        };
        if !sub.connected || !publ.connected {
            return;
        }
        let producers: SmallVec<[ProducerKey; 3]> = publ.producers.iter().flatten().copied().collect();
        for pk in producers {
            if self.sessions[&subscriber].consumers.contains_key(&pk) {
                continue;
            }
            if !self.create_consumer(subscriber, pk) {
                // Upstream skips the remaining types after a failure and retries them all later.
                break;
            }
        }
    }

    /// Creates one consumer and announces it with `INIT_CONSUMER`. `false` if it could not be
    /// announced (the caller stops there); `true` if created or if the device simply cannot
    /// receive this producer.
    fn create_consumer(&mut self, subscriber: SessionRef, pk: ProducerKey) -> bool {
        let s = &self.sessions[&subscriber];
        let (Some(stc), Some(device)) = (s.stc, s.device.as_ref()) else {
            // No usable capabilities: nothing is ever consumed, as upstream.
            return true;
        };
        let p = &self.producers[pk];
        let t = &mut self.transports[stc];
        let mid_text = t.next_mid.to_string();
        let ssrc = loop {
            let candidate: u32 = self.rng.random();
            let rtx = candidate.wrapping_add(1);
            if candidate > 1 && rtx > 1 && ![candidate, rtx].contains(&PROBATOR_SSRC) {
                break candidate;
            }
        };
        let Some(params) = consumer_params::derive(
            &self.settings.router,
            &p.params,
            device,
            ConsumerIdentity {
                mid: &mid_text,
                ssrc,
                rtx_ssrc: ssrc.wrapping_add(1),
                cname: &self.transports[p.transport].cname,
            },
        ) else {
            return true;
        };
        let t = &mut self.transports[stc];
        t.next_mid += 1;
        let mid = Mid::from(mid_text.as_str());
        let rtx_ssrc = params.rtx.then(|| ssrc.wrapping_add(1));
        let Some(rtc) = t.rtc.as_mut() else { return true };
        rtc.direct_api().declare_media(mid, p.kind());
        // ringsfu's own egress or str0m's: decided once the transport's SRTP keys are known.
        let egress = Egress::Undecided;
        let router_id = |negotiated: bool, uri: &str| {
            negotiated.then(|| self.settings.router.extension_id(p.kind(), uri)).flatten().map(|e| e.id)
        };
        let direct_extensions = DirectExtensions {
            mid: router_id(params.extensions.mid, uri::MID),
            audio_level: router_id(params.extensions.audio_level, uri::AUDIO_LEVEL),
            twcc: router_id(params.extensions.twcc, uri::TWCC),
            video_orientation: router_id(params.extensions.video_orientation, uri::VIDEO_ORIENTATION),
        };

        let id = self.random_uuid();
        let munger_seed = self.rng.random::<u64>();
        let p = &self.producers[pk];
        let payload = json!({
            "id": id.to_string(),
            "kind": super::ortc::caps::kind_str(p.kind()),
            "producerId": p.id.to_string(),
            "rtpParameters": params.json,
            "sessionId": self.sessions[&p.session].id.to_value(),
            "active": !p.paused,
            "type": p.media.as_str(),
        });
        let consumer = Consumer {
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
            acked: false,
            paused_by_subscriber: false,
            munger: Munger::new(munger_seed),
            vp8: (p.params.codecs[0].mime == super::ortc::Mime::Vp8).then(Vp8Rewriter::default),
            current: None,
            // Single-layer producers have nothing to choose; simulcast waits for the allocator.
            target: (p.layers.len() == 1).then_some(0),
            selector: LayerSelector::default(),
            budget: 0,
            clock_rate: p.clock_rate,
            egress,
            direct_extensions,
        };
        let ck = self.consumers.insert(consumer);
        if matches!(self.consumers[ck].egress, Egress::Str0m) {
            self.declare_str0m_stream(ck);
        } else if self.transports[stc].connected {
            self.decide_egress(ck);
        }
        // The media declaration above mutated the `Rtc`: poll it, as str0m requires.
        self.drain(stc);
        self.producers[pk].consumers.push(ck);
        self.transports[stc].consumers_by_mid.insert(mid, ck);
        let token = self.next_token();
        let s = self.sessions.get_mut(&subscriber).expect("checked above");
        s.consumers.insert(pk, ck);
        s.pending.insert(token, Pending::InitConsumer(ck));
        self.out.events.push_back(ShardEvent::ToSession(
            subscriber,
            SessionEvent::Request { token, name: name::INIT_CONSUMER, payload, batch: true },
        ));
        true
    }

    /// Picks the egress of a consumer whose transport has its SRTP keys.
    pub(crate) fn decide_egress(&mut self, ck: ConsumerKey) {
        let Some(c) = self.consumers.get_mut(ck) else { return };
        if !matches!(c.egress, Egress::Undecided) {
            return;
        }
        let own = match c.kind {
            MediaKind::Audio => self.settings.own_audio_egress,
            MediaKind::Video => self.settings.own_video_egress,
        };
        let direct = own && self.transports.get(c.transport).is_some_and(|t| t.srtp.is_some());
        if direct {
            let mut stream = DirectStream::new(c.ssrc, &c.mid.to_string(), c.direct_extensions, c.clock_rate);
            let rtx_types: SmallVec<[(u8, u8); 2]> =
                c.codecs.iter().filter_map(|(pt, rtx)| rtx.map(|rtx| (*pt, rtx))).collect();
            if let (Some(ssrc), false) = (c.rtx_ssrc, rtx_types.is_empty()) {
                stream.rtx = Some(RtxStream::new(ssrc, rtx_types, self.rng.random()));
            }
            c.egress = Egress::Direct(Box::new(stream));
        } else {
            c.egress = Egress::Str0m;
            self.declare_str0m_stream(ck);
        }
    }

    /// Declares a consumer's stream on its transport's `Rtc`: str0m sends it.
    fn declare_str0m_stream(&mut self, ck: ConsumerKey) {
        let Some(c) = self.consumers.get(ck) else { return };
        let (ssrc, rtx, mid, transport) = (c.ssrc, c.rtx_ssrc, c.mid, c.transport);
        let Some(t) = self.transports.get_mut(transport) else { return };
        t.str0m_streams += 1;
        let Some(rtc) = t.rtc.as_mut() else { return };
        // Unpaced: a forwarded packet leaves in the wake-up that received it. The publisher's
        // encoder already paces its frames; str0m's leaky bucket would hold video back for up to
        // a burst interval per subscriber (the broadcast's latency tail). TWCC still runs.
        rtc.direct_api().declare_stream_tx(ssrc.into(), rtx.map(Into::into), mid, None).set_unpaced(true);
        self.drain(transport);
    }

    /// The subscriber answered `INIT_CONSUMER`: media may flow.
    pub(crate) fn consumer_acked(&mut self, now: Instant, ck: ConsumerKey) {
        let Some(c) = self.consumers.get_mut(ck) else { return };
        c.acked = true;
        let transport = c.transport;
        self.consumer_state_changed(now, ck);
        self.allocate(now, transport);
    }

    /// `INIT_CONSUMER` failed: drop the consumer, count the error, try again later.
    pub(crate) fn consumer_failed(&mut self, now: Instant, ck: ConsumerKey) {
        let Some(c) = self.consumers.get(ck) else { return };
        let subscriber = c.session;
        let publisher = self.producers.get(c.producer).map(|p| p.session);
        self.close_consumer(ck);
        let Some(publisher) = publisher else { return };
        if !self.count_error(subscriber, "consumer creation failed") {
            return;
        }
        let Some(s) = self.sessions.get_mut(&subscriber) else { return };
        if s.retrying.insert(publisher) {
            self.out.timers.schedule(now + RETRY_DELAY, Timer::ConsumerRetry(subscriber, publisher));
        }
    }

    pub(crate) fn consumer_retry(&mut self, subscriber: SessionRef, publisher: SessionRef) {
        let Some(s) = self.sessions.get_mut(&subscriber) else { return };
        if !s.retrying.remove(&publisher) {
            return;
        }
        self.consume(subscriber, publisher);
    }

    /// `CONSUMPTION_CHANGE`: the subscriber pauses or resumes what it gets from `publisher_id`.
    pub(crate) fn consumption_change(
        &mut self,
        now: Instant,
        subscriber: SessionRef,
        publisher_id: &crate::protocol::SessionId,
        states: &[(MediaType, bool)],
    ) {
        let Some(s) = self.sessions.get(&subscriber) else { return };
        let Some(publisher) = self.channels.get(&s.channel).and_then(|c| c.sessions.get(publisher_id)).copied() else {
            return;
        };
        for &(media, active) in states {
            let Some(pk) = self.sessions.get(&publisher).and_then(|p| p.producers[media.index()]) else { continue };
            let Some(&ck) = self.sessions[&subscriber].consumers.get(&pk) else { continue };
            let c = &mut self.consumers[ck];
            if c.paused_by_subscriber == active {
                c.paused_by_subscriber = !active;
                self.consumer_state_changed(now, ck);
            }
        }
    }

    /// A consumer was paused or resumed (by either side) or acknowledged: only active consumers
    /// are on their producer's fan-out list (a paused one costs nothing per packet); a resumed one
    /// restarts at a keyframe with fresh anchors.
    pub(crate) fn consumer_state_changed(&mut self, now: Instant, ck: ConsumerKey) {
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
            self.request_keyframe(now, producer, target);
        }
    }

    /// Removes a consumer from its producer, its subscriber and the subscriber's transport.
    pub(crate) fn close_consumer(&mut self, ck: ConsumerKey) {
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
        if let Some(t) = self.transports.get_mut(c.transport) {
            t.consumers_by_mid.remove(&c.mid);
            if matches!(c.egress, Egress::Str0m) {
                t.str0m_streams = t.str0m_streams.saturating_sub(1);
            }
            if let Some(rtc) = t.rtc.as_mut() {
                rtc.direct_api().remove_media(c.mid);
                self.drain(c.transport);
            }
        }
    }
}
