//! A producer: one media type a session publishes (audio, camera or screen), with its simulcast
//! layers, on that session's receiving transport.

use super::arena::Key;
use super::consumer::ConsumerKey;
use super::ingress::nack::NackTracker;
use super::ingress::payloads::{self, PayloadRing};
use super::ingress::receive::ReceiveStream;
use super::ingress::rtcp_out;
use super::ortc::producer_params::{self, MAX_ENCODINGS, ProducerParams};
use super::rate::RateMeter;
use super::shard::Shard;
use super::transport::TransportKey;
use crate::protocol::messages::MediaType;
use crate::sfu::ids::SessionRef;
use serde_json::{Value, json};
use smallvec::SmallVec;
use std::time::{Duration, Instant};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use uuid::Uuid;

pub type ProducerKey = Key<Producer>;

/// Minimum time between two keyframe requests to the same layer of a publisher.
pub const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);

/// One encoding of a producer (a simulcast layer; layer 0 is the lowest).
#[derive(Debug)]
pub struct Layer {
    pub rid: Option<Rid>,
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    pub meter: RateMeter,
    pub last_keyframe_request: Option<Instant>,
    /// A keyframe was asked for and has not arrived yet.
    pub keyframe_pending: bool,
    /// Where its payloads live while consumers may resend them.
    pub payloads: PayloadRing,
    /// The highest (extended) sequence number forwarded from it: an older packet is late.
    pub highest_seq: Option<u64>,
    /// ringsfu's own ingress: the media stream's and its RTX stream's receive state, and the
    /// packets to ask again for (video).
    pub receive: Option<ReceiveStream>,
    pub rtx_receive: Option<ReceiveStream>,
    pub nack: Option<NackTracker>,
}

impl Layer {
    fn new(rid: Option<Rid>, kind: MediaKind) -> Layer {
        let slots = if kind == MediaKind::Video { payloads::VIDEO_SLOTS } else { payloads::AUDIO_SLOTS };
        Layer {
            rid,
            ssrc: None,
            rtx_ssrc: None,
            meter: RateMeter::default(),
            last_keyframe_request: None,
            keyframe_pending: false,
            payloads: PayloadRing::new(slots),
            highest_seq: None,
            receive: None,
            rtx_receive: None,
            nack: None,
        }
    }
}

pub struct Producer {
    pub id: Uuid,
    pub session: SessionRef,
    pub transport: TransportKey,
    pub media: MediaType,
    pub params: ProducerParams,
    /// The media section on the receiving `Rtc`.
    pub mid: Mid,
    pub layers: SmallVec<[Layer; MAX_ENCODINGS]>,
    pub paused: bool,
    /// Consumers of this producer, on the subscribers' sending transports.
    pub consumers: Vec<ConsumerKey>,
    /// The active ones (acknowledged, not paused by their subscriber): the fan-out list.
    pub forwarding: Vec<ConsumerKey>,
    pub meter: RateMeter,
    pub clock_rate: u32,
}

impl Producer {
    pub fn layer_of_rid(&self, rid: &[u8]) -> Option<u8> {
        self.params.encodings.iter().position(|e| e.rid.as_deref().map(str::as_bytes) == Some(rid)).map(|i| i as u8)
    }

    pub fn kind(&self) -> MediaKind {
        self.params.kind
    }
}

impl Shard {
    /// `INIT_PRODUCER`: validate, (re)place the producer of that type, fan it out.
    pub(crate) fn init_producer(
        &mut self,
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
        if self.transports[cts].dtls.is_none() {
            return Err("send transport not connected: send CONNECT_CTS_TRANSPORT first".into());
        }
        let params = producer_params::parse(kind, rtp_parameters, &self.settings.router)?;
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
        let t = &self.transports[cts];
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
            self.close_producer(old);
        }
        self.ensure_receiving_rtc(now, cts, &params);
        let t = &mut self.transports[cts];
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
        self.drain(cts);

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
        let id = self.random_uuid();
        let key = self.producers.insert(Producer {
            id,
            session,
            transport: cts,
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
            self.bind_ssrc(cts, key, layer, ssrc, rtx);
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
        for other in self.channel_sessions(channel) {
            if other != session {
                self.consume(other, session);
            }
        }
        self.broadcast_info(session);
        Ok(json!({"id": id.to_string()}))
    }

    /// `PRODUCTION_CHANGE`: pause or resume a producer; consumers follow.
    pub(crate) fn production_change(&mut self, now: Instant, session: SessionRef, media: MediaType, active: bool) {
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
            let consumers = p.consumers.clone();
            for ck in consumers {
                self.consumer_state_changed(now, ck);
            }
        }
        self.broadcast_info(session);
    }

    /// Asks the publisher for a keyframe of `layer`, at most every `KEYFRAME_REQUEST_INTERVAL`.
    pub(crate) fn request_keyframe(&mut self, now: Instant, producer: ProducerKey, layer: u8) {
        let Some(p) = self.producers.get_mut(producer) else { return };
        if p.kind() != MediaKind::Video {
            return;
        }
        let Some(l) = p.layers.get_mut(layer as usize) else { return };
        let Some(ssrc) = l.ssrc else { return };
        if l.last_keyframe_request.is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_REQUEST_INTERVAL) {
            return;
        }
        l.last_keyframe_request = Some(now);
        l.keyframe_pending = true;
        let transport = p.transport;
        if self.send_to_publisher(transport, |buf, sender| rtcp_out::pli(buf, sender, ssrc)) {
            return;
        }
        let Some(rtc) = self.transports.get_mut(transport).and_then(|t| t.rtc.as_mut()) else { return };
        if let Some(rx) = rtc.direct_api().stream_rx(&ssrc.into()) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
        }
        self.drain(transport);
        self.needs_poke(transport);
    }

    /// Closes a producer and every consumer of it.
    pub(crate) fn close_producer(&mut self, key: ProducerKey) {
        let Some(p) = self.producers.remove(key) else { return };
        for ck in p.consumers {
            self.close_consumer(ck);
        }
        if let Some(t) = self.transports.get_mut(p.transport) {
            t.ssrcs.retain(|_, route| route.producer != key);
            if let Some(rtc) = t.rtc.as_mut() {
                rtc.direct_api().remove_media(p.mid);
                self.drain(p.transport);
            }
        }
        if let Some(s) = self.sessions.get_mut(&p.session)
            && s.producers[p.media.index()] == Some(key)
        {
            s.producers[p.media.index()] = None;
        }
    }
}
