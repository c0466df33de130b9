//! A router's producers: `INIT_PRODUCER` checked and applied, paused and resumed, asked for
//! keyframes, closed.

use super::Router;
use crate::protocol::messages::MediaType;
use crate::sfu::context::Context;
use crate::sfu::ids::SessionRef;
use crate::sfu::ingress::rtcp_out;
use crate::sfu::ortc::producer_params::{self};
use crate::sfu::producer::{KEYFRAME_REQUEST_INTERVAL, Layer, Producer, ProducerKey};
use crate::sfu::rate::RateMeter;
use crate::sfu::relay::{Relay, RelayMessage};
use serde_json::{Value, json};
use std::time::Instant;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};

impl Router {
    /// `INIT_PRODUCER`: validate, (re)place the producer of that type, fan it out.
    pub(crate) fn init_producer(
        &mut self,
        cx: &mut Context,
        now: Instant,
        session: SessionRef,
        media: MediaType,
        kind: &str,
        rtp_parameters: &Value,
    ) -> Result<Value, String> {
        let kind = match (kind, media) {
            ("audio", MediaType::Audio) => MediaKind::Audio,
            ("video", MediaType::Camera | MediaType::Screen) => MediaKind::Video,
            (other, _) => {
                return Err(format!("kind {other:?} does not fit type {:?}", media.as_str()));
            }
        };
        let Some(s) = self.sessions.get(&session) else {
            return Err("session is closed".into());
        };
        let Some(cts) = s.cts else {
            return Err("this channel has no media (webRTC=false)".into());
        };
        if cx.transports[cts].dtls.is_none() {
            return Err("send transport not connected: send CONNECT_CTS_TRANSPORT first".into());
        }
        let params = producer_params::parse(kind, rtp_parameters, &cx.settings.router)?;
        let replaced = s.producers[media.index()];

        // SSRCs and mid must be unique among the transport's other producers.
        for pk in s.producers.iter().flatten().filter(|pk| Some(**pk) != replaced) {
            let other = &self.producers[*pk];
            for e in &params.encodings {
                for ssrc in [e.ssrc, e.rtx_ssrc].into_iter().flatten() {
                    if other.layers.iter().any(|l| l.ssrc == Some(ssrc) || l.rtx_ssrc == Some(ssrc)) {
                        return Err(format!("ssrc already exists in RTP listener [ssrc:{ssrc}]"));
                    }
                }
            }
            if params.mid.is_some() && other.params.mid == params.mid {
                return Err(format!(
                    "MID already exists in RTP listener [mid:{}]",
                    params.mid.as_deref().unwrap_or("")
                ));
            }
        }
        let t = &cx.transports[cts];
        if t.rtc.is_some() {
            // The receiving Rtc was shaped by the first producer; later ones must fit in it.
            for c in &params.codecs {
                for pt in [Some(c.payload_type), c.rtx_payload_type].into_iter().flatten() {
                    if !t.built_payload_types.contains(&pt) {
                        return Err(format!(
                            "payload type {pt} is outside those this transport accepts (96-127, 0, 8 and the first producer's)"
                        ));
                    }
                }
            }
        }

        if let Some(old) = replaced {
            self.close_producer(cx, old);
        }
        self.ensure_receiving_rtc(cx, now, cts, &params);
        let t = &mut cx.transports[cts];
        if !t.cname_fixed {
            // mediasoup: the transport's first producer names its streams (its CNAME, or the
            // random one when it has none, as simulcast browsers send "").
            if let Some(cname) = &params.cname {
                t.cname = cname.clone();
            }
            t.cname_fixed = true;
        }
        let mid = Mid::from(params.mid.clone().unwrap_or_else(|| format!("p{}", media.index())).as_str());
        let rtc = t.rtc.as_mut().expect("built above");
        rtc.direct_api().declare_media(mid, kind);
        cx.drain(cts);

        let clock_rate = params.codecs[0].clock_rate;
        let layers = params.encodings.iter().map(|e| Layer::new(e.rid.as_deref().map(Rid::from), kind)).collect();
        let explicit: Vec<(u8, u32, bool)> = params
            .encodings
            .iter()
            .enumerate()
            .flat_map(|(i, e)| {
                [e.ssrc.map(|s| (i as u8, s, false)), e.rtx_ssrc.map(|s| (i as u8, s, true))].into_iter().flatten()
            })
            .collect();
        let id = cx.random_uuid();
        let cname = cx.transports[cts].cname.clone();
        let key = self.producers.insert(Producer {
            id,
            session,
            transport: Some(cts),
            cname,
            media,
            params,
            mid,
            layers,
            paused: false,
            consumers: Vec::new(),
            forwarding: Vec::new(),
            meter: RateMeter::default(),
            clock_rate,
        });
        for (layer, ssrc, rtx) in explicit {
            self.bind_ssrc(cx, cts, key, layer, ssrc, rtx);
        }
        let s = self.sessions.get_mut(&session).expect("checked above");
        s.producers[media.index()] = Some(key);
        match media {
            MediaType::Camera => s.info.is_camera_on = Some(true),
            MediaType::Screen => s.info.is_screen_sharing_on = Some(true),
            MediaType::Audio => {}
        }
        let channel = s.channel;
        tracing::info!(session = %s.id, %channel, producer = %id, media = media.as_str(), "producer created");
        for other in self.sessions_in_order() {
            if other != session {
                self.consume(cx, other, session);
            }
        }
        // A session not connected yet is announced to the other parts with its producers.
        if self.sessions.get(&session).is_some_and(|s| s.connected)
            && let Some(message) = self.producer_opened(key)
        {
            self.relay_to_peers(cx, message);
        }
        self.broadcast_info(cx, session);
        Ok(json!({"id": id.to_string()}))
    }

    /// `PRODUCTION_CHANGE`: pause or resume a producer; consumers follow.
    pub(crate) fn production_change(
        &mut self,
        cx: &mut Context,
        now: Instant,
        session: SessionRef,
        media: MediaType,
        active: bool,
    ) {
        let Some(s) = self.sessions.get_mut(&session) else { return };
        match media {
            MediaType::Camera => s.info.is_camera_on = Some(active),
            MediaType::Screen => s.info.is_screen_sharing_on = Some(active),
            MediaType::Audio => {}
        }
        let Some(pk) = s.producers[media.index()] else { return };
        let p = &mut self.producers[pk];
        if p.paused == active {
            p.paused = !active;
            let message = RelayMessage::ProducerPaused { producer: p.id, paused: p.paused };
            let consumers = p.consumers.clone();
            self.relay_to_peers(cx, message);
            for ck in consumers {
                self.consumer_state_changed(cx, now, ck);
            }
        }
        self.broadcast_info(cx, session);
    }

    /// Asks the publisher for a keyframe of `layer`, at most every `KEYFRAME_REQUEST_INTERVAL`.
    pub(crate) fn request_keyframe(&mut self, cx: &mut Context, now: Instant, producer: ProducerKey, layer: u8) {
        let Some(p) = self.producers.get_mut(producer) else { return };
        if p.kind() != MediaKind::Video {
            return;
        }
        let Some(l) = p.layers.get_mut(layer as usize) else { return };
        if l.last_keyframe_request.is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
            return;
        }
        let Some(transport) = p.transport else {
            // A mirror: the publisher's own part asks it (and throttles again).
            l.last_keyframe_request = Some(now);
            l.keyframe_pending = true;
            let owner = self.sessions.get(&p.session).and_then(|s| s.remote);
            if let Some(owner) = owner {
                let message = RelayMessage::Keyframe { producer: p.id, layer };
                cx.out.relay.push_back((owner, Relay { channel: self.id, message }));
            }
            return;
        };
        let Some(ssrc) = l.ssrc else { return };
        l.last_keyframe_request = Some(now);
        l.keyframe_pending = true;
        if cx.send_to_publisher(transport, |buf, sender| rtcp_out::pli(buf, sender, ssrc)) {
            return;
        }
        let Some(rtc) = cx.transports.get_mut(transport).and_then(|t| t.rtc.as_mut()) else { return };
        if let Some(rx) = rtc.direct_api().stream_rx(&ssrc.into()) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        cx.drain(transport);
        cx.needs_poke(transport);
    }

    /// Closes a producer and every consumer of it.
    pub(crate) fn close_producer(&mut self, cx: &mut Context, key: ProducerKey) {
        let Some(p) = self.producers.remove(key) else { return };
        for ck in p.consumers {
            self.close_consumer(cx, ck);
        }
        if let Some(transport) = p.transport
            && let Some(t) = cx.transports.get_mut(transport)
        {
            t.ssrcs.retain(|_, route| route.producer != key);
            if let Some(rtc) = t.rtc.as_mut() {
                rtc.direct_api().remove_media(p.mid);
                cx.drain(transport);
            }
        }
        if p.transport.is_some() {
            self.relay_to_peers(cx, RelayMessage::ProducerClosed { producer: p.id });
        } else {
            self.mirrors.remove(&p.id);
        }
        if let Some(s) = self.sessions.get_mut(&p.session)
            && s.producers[p.media.index()] == Some(key)
        {
            s.producers[p.media.index()] = None;
        }
    }
}
