//! A synthetic Odoo participant, sans-IO: it answers the bus as the Odoo browser client does
//! (mediasoup-client underneath), publishes synthetic audio and simulcast video, consumes what it
//! is offered and checks what arrives. Drivers feed it bus envelopes, datagrams and time.

use super::media::{AudioSource, Generated, VideoSource, read_stamp};
use super::transport::{
    BROWSER_EXTENSIONS, BROWSER_OPUS_PT, BROWSER_VP8_PT, BROWSER_VP8_RTX_PT, ClientTransport, Side,
};
use ringsfu_core::protocol::messages::{MediaType, name};
use serde_json::{Map, Value, json};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;
use str0m::Event;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::net::Protocol;
use str0m::rtp::{RtpWrite, Ssrc};

/// What to publish.
#[derive(Debug, Clone)]
pub enum Publish {
    Audio {
        bytes: usize,
    },
    /// VP8 with one layer per bitrate; several layers are rid-based simulcast (no SSRCs announced,
    /// as browsers do), one layer is announced with its SSRC and RTX SSRC.
    Video {
        media: MediaType,
        bitrates: Vec<u64>,
        fps: u32,
    },
}

impl Publish {
    fn media(&self) -> MediaType {
        match self {
            Publish::Audio { .. } => MediaType::Audio,
            Publish::Video { media, .. } => *media,
        }
    }
}

/// Something a test or load generator may want to know.
#[derive(Debug, Clone, PartialEq)]
pub enum ParticipantEvent {
    /// `INIT_TRANSPORTS` answered.
    Connected,
    ProducerCreated {
        media: MediaType,
        id: String,
    },
    ConsumerAdded {
        consumer_id: String,
        session_id: Value,
        media: String,
        kind: String,
        active: bool,
    },
    Message {
        name: String,
        payload: Value,
    },
    /// A request of ours got an error reply.
    RequestFailed {
        name: String,
        error: String,
    },
    /// The reply to a `raw_request`.
    Reply {
        id: String,
        message: Option<Value>,
        error: Option<String>,
    },
    /// Both our transports completed DTLS.
    MediaConnected,
}

/// What arrived for one consumer.
#[derive(Debug, Clone, Default)]
pub struct Reception {
    pub consumer_id: String,
    pub session_id: Value,
    pub media: String,
    pub ssrc: u32,
    pub rtx_ssrc: Option<u32>,
    pub payload_types: Vec<u8>,
    pub mid: String,
    /// Its place among the participant's consumers, in the order they were announced.
    pub added: u64,
    pub packets: u64,
    pub bytes: u64,
    pub wrong_payload_type: u64,
    pub lowest_seq: Option<u64>,
    pub highest_seq: Option<u64>,
    pub out_of_order: u64,
    pub keyframes: u64,
    /// One-way latencies in microseconds (sender stamp to arrival).
    pub latencies_us: Vec<u64>,
    pub first_at: Option<Instant>,
    pub last_at: Option<Instant>,
    /// Distinct sequence numbers received (duplicates within the last 1024 not counted).
    pub distinct: u64,
    window: SeqWindow,
    /// RFC 3550 interarrival jitter, in microseconds.
    pub jitter_us: f64,
    last_transit_us: Option<i64>,
    /// VP8: the picture id of the newest packet, and how often a packet directly following the
    /// previous one carried an id that is neither the same nor the next (a broken stream).
    pub last_picture_id: Option<u16>,
    pub picture_id_jumps: u64,
    /// RTP timestamps that went backwards between consecutive new packets.
    pub timestamp_regressions: u64,
    last_timestamp: Option<u32>,
    /// Sender reports received (and authenticated) for this stream, and the last one's packet
    /// count and RTP time.
    pub sender_reports: u64,
    pub reported_packets: u32,
    pub reported_rtp_time: u64,
}

impl Reception {
    /// Sequence numbers missing between the first and the last received.
    pub fn gaps(&self) -> u64 {
        match (self.lowest_seq, self.highest_seq) {
            (Some(lo), Some(hi)) => (hi - lo + 1).saturating_sub(self.distinct),
            _ => 0,
        }
    }
}

/// Which of the last 1024 sequence numbers were seen, to count each packet once.
#[derive(Debug, Clone, Default)]
struct SeqWindow {
    bits: Vec<u64>,
    highest: Option<u64>,
}

impl SeqWindow {
    const SIZE: u64 = 1024;

    /// Marks `seq`; `false` if it was already seen (or is too old to tell).
    fn insert(&mut self, seq: u64) -> bool {
        if self.bits.is_empty() {
            self.bits = vec![0; (Self::SIZE / 64) as usize];
        }
        let highest = *self.highest.get_or_insert(seq);
        if seq > highest {
            // Forget the slots the window slides over.
            let slide = (seq - highest).min(Self::SIZE);
            for s in 1..=slide {
                let old = highest + s;
                self.bits[((old % Self::SIZE) / 64) as usize] &= !(1 << (old % 64));
            }
            self.highest = Some(seq);
        } else if highest - seq >= Self::SIZE {
            return false;
        }
        let (word, bit) = (((seq % Self::SIZE) / 64) as usize, seq % 64);
        let fresh = self.bits[word] & (1 << bit) == 0;
        self.bits[word] |= 1 << bit;
        fresh
    }
}

struct Layer {
    source: VideoSource,
    ssrc: u32,
    rid: Option<Rid>,
}

enum Source {
    Audio { source: AudioSource, ssrc: u32 },
    Video { layers: Vec<Layer> },
}

struct Publication {
    media: MediaType,
    mid: Mid,
    source: Source,
    active: bool,
    producer_id: Option<String>,
}

#[derive(Debug, Clone)]
enum Pending {
    ConnectCts,
    ConnectStc,
    InitProducer(MediaType),
}

pub struct Participant {
    pub session_id: Value,
    cts_local: SocketAddr,
    stc_local: SocketAddr,
    /// How both transports reach the server: UDP, or ICE-TCP (`over_tcp`).
    proto: Protocol,
    pub cts: Option<ClientTransport>,
    pub stc: Option<ClientTransport>,
    router_caps: Value,
    connected: bool,
    media_connected: bool,
    cts_connect: ConnectState,
    stc_connect: ConnectState,
    next_request: u64,
    outbox: VecDeque<Value>,
    pending: HashMap<String, Pending>,
    wanted: Vec<Publish>,
    publications: Vec<Publication>,
    /// Consumer requests waiting for `CONNECT_STC_TRANSPORT` to be acknowledged.
    queued_consumers: Vec<(Value, Value)>,
    pub receptions: HashMap<u32, Reception>,
    /// Consumers announced so far (orders the receptions).
    consumers_added: u64,
    events: VecDeque<ParticipantEvent>,
    generated: Vec<Generated>,
    next_mid: u32,
    /// Answer `INIT_CONSUMER` (a misbehaving client may not).
    pub answer_consumers: bool,
    /// Record per-packet latencies (the load generator keeps its own histograms instead).
    pub record_latencies: bool,
    /// Announce a DTLS fingerprint that is not ours (a misbehaving client).
    pub wrong_fingerprint: bool,
    /// One-way latencies of everything received, in microseconds (load tests).
    pub latency_histograms: Option<Box<Latencies>>,
}

/// One-way latency histograms in microseconds, audio apart from video: only video goes through
/// the SFU's send-side pacer, so the two tell different stories.
#[derive(Debug, Clone)]
pub struct Latencies {
    pub audio: hdrhistogram::Histogram<u64>,
    pub video: hdrhistogram::Histogram<u64>,
}

impl Latencies {
    /// Histograms from 1 µs to 60 s with 3 significant digits.
    pub fn new() -> Self {
        let h = || hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds");
        Self { audio: h(), video: h() }
    }

    pub fn add(&mut self, other: &Latencies) {
        let _ = self.audio.add(&other.audio);
        let _ = self.video.add(&other.video);
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnectState {
    Idle,
    Requested,
    Done,
}

impl Participant {
    pub fn new(session_id: Value, cts_local: SocketAddr, stc_local: SocketAddr) -> Participant {
        Participant {
            session_id,
            cts_local,
            stc_local,
            proto: Protocol::Udp,
            cts: None,
            stc: None,
            router_caps: Value::Null,
            connected: false,
            media_connected: false,
            cts_connect: ConnectState::Idle,
            stc_connect: ConnectState::Idle,
            next_request: 0,
            outbox: VecDeque::new(),
            pending: HashMap::new(),
            wanted: Vec::new(),
            publications: Vec::new(),
            queued_consumers: Vec::new(),
            receptions: HashMap::new(),
            consumers_added: 0,
            events: VecDeque::new(),
            generated: Vec::new(),
            next_mid: 0,
            answer_consumers: true,
            record_latencies: true,
            wrong_fingerprint: false,
            latency_histograms: None,
        }
    }

    /// Both transports use the server's passive TCP candidate (ICE-TCP) instead of UDP; the
    /// driver connects `locals()` to the servers' addresses and frames datagrams (RFC 4571).
    pub fn over_tcp(mut self) -> Participant {
        self.proto = Protocol::Tcp;
        self
    }

    pub fn protocol(&self) -> Protocol {
        self.proto
    }

    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn locals(&self) -> [SocketAddr; 2] {
        [self.cts_local, self.stc_local]
    }

    // ---- actions -------------------------------------------------------------------------

    /// Publishes (now if connected, else once `INIT_TRANSPORTS` is answered).
    pub fn publish(&mut self, now: Instant, what: Publish) {
        self.wanted.push(what);
        if self.connected {
            self.start_publishing(now);
        }
    }

    /// `PRODUCTION_CHANGE`; a paused publication stops sending (as `zeroRtpOnPause`).
    pub fn set_production(&mut self, media: MediaType, active: bool) {
        if let Some(p) = self.publications.iter_mut().find(|p| p.media == media) {
            p.active = active;
        }
        self.message(name::PRODUCTION_CHANGE, json!({"type": media.as_str(), "active": active}));
    }

    pub fn set_consumption(&mut self, session_id: Value, states: Value) {
        self.message(name::CONSUMPTION_CHANGE, json!({"sessionId": session_id, "states": states}));
    }

    pub fn broadcast(&mut self, message: Value) {
        self.message(name::BROADCAST, message);
    }

    pub fn update_info(&mut self, info: Value, need_refresh: bool) {
        let mut payload = json!({"info": info});
        if need_refresh {
            payload["needRefresh"] = json!(true);
        }
        self.message(name::C_INFO_CHANGE, payload);
    }

    /// Sends a request of any name (for tests of error paths).
    pub fn raw_request(&mut self, name: &str, payload: Value) -> String {
        let id = self.request_id();
        self.outbox.push_back(json!({"message": {"name": name, "payload": payload}, "needResponse": id}));
        id
    }

    fn message(&mut self, name: &str, payload: Value) {
        self.outbox.push_back(json!({"message": {"name": name, "payload": payload}}));
    }

    fn request(&mut self, name: &str, payload: Value, pending: Pending) {
        let id = self.request_id();
        self.pending.insert(id.clone(), pending);
        self.outbox.push_back(json!({"message": {"name": name, "payload": payload}, "needResponse": id}));
    }

    fn request_id(&mut self) -> String {
        let id = format!("c_0_{}", self.next_request);
        self.next_request += 1;
        id
    }

    // ---- inputs ----------------------------------------------------------------------------

    /// One envelope from the server.
    pub fn handle_envelope(&mut self, now: Instant, envelope: &Value) {
        if let Some(id) = envelope.get("responseTo") {
            let id = id.as_str().unwrap_or_default().to_string();
            let error = envelope.get("error").and_then(Value::as_str).map(str::to_string);
            self.on_response(now, &id, envelope.get("message"), error);
            return;
        }
        let name = envelope["message"]["name"].as_str().unwrap_or_default().to_string();
        let payload = envelope["message"].get("payload").cloned().unwrap_or(Value::Null);
        match envelope.get("needResponse") {
            Some(id) => self.on_request(now, id.clone(), &name, payload),
            None => self.events.push_back(ParticipantEvent::Message { name, payload }),
        }
    }

    fn reply(&mut self, id: Value, message: Option<Value>) {
        let mut env = Map::new();
        if let Some(m) = message {
            env.insert("message".into(), m);
        }
        env.insert("responseTo".into(), id);
        self.outbox.push_back(Value::Object(env));
    }

    fn on_request(&mut self, now: Instant, id: Value, name: &str, payload: Value) {
        match name {
            name::INIT_TRANSPORTS => {
                self.router_caps = payload["capabilities"].clone();
                let cts = ClientTransport::new(
                    &payload["ctsConfig"],
                    &self.router_caps,
                    Side::BrowserSend,
                    self.cts_local,
                    self.proto,
                    now,
                );
                let stc = ClientTransport::new(
                    &payload["stcConfig"],
                    &self.router_caps,
                    Side::RouterReceive,
                    self.stc_local,
                    self.proto,
                    now,
                );
                let (Ok(cts), Ok(stc)) = (cts, stc) else {
                    return; // no reply: the server times out, as with a broken browser
                };
                self.cts = Some(cts);
                self.stc = Some(stc);
                let caps = device_capabilities(&self.router_caps);
                self.reply(id, Some(caps));
                self.connected = true;
                self.events.push_back(ParticipantEvent::Connected);
                self.start_publishing(now);
            }
            name::INIT_CONSUMER => {
                if !self.answer_consumers {
                    return;
                }
                if self.stc_connect != ConnectState::Done {
                    // mediasoup-client connects the receiving transport before answering.
                    self.connect(false);
                    self.queued_consumers.push((id, payload));
                    return;
                }
                self.accept_consumer(id, payload);
            }
            // PING and anything unknown: an empty reply, as the Odoo client.
            _ => self.reply(id, None),
        }
    }

    fn on_response(&mut self, now: Instant, id: &str, message: Option<&Value>, error: Option<String>) {
        let Some(pending) = self.pending.remove(id) else {
            self.events.push_back(ParticipantEvent::Reply { id: id.to_string(), message: message.cloned(), error });
            return;
        };
        if let Some(error) = error {
            let name = match pending {
                Pending::ConnectCts => name::CONNECT_CTS_TRANSPORT,
                Pending::ConnectStc => name::CONNECT_STC_TRANSPORT,
                Pending::InitProducer(_) => name::INIT_PRODUCER,
            };
            self.events.push_back(ParticipantEvent::RequestFailed { name: name.into(), error });
            return;
        }
        match pending {
            Pending::ConnectCts => {
                self.cts_connect = ConnectState::Done;
                if let Some(t) = self.cts.as_mut() {
                    t.start(now);
                }
                self.start_publishing(now);
            }
            Pending::ConnectStc => {
                self.stc_connect = ConnectState::Done;
                if let Some(t) = self.stc.as_mut() {
                    t.start(now);
                }
                for (id, payload) in std::mem::take(&mut self.queued_consumers) {
                    self.accept_consumer(id, payload);
                }
            }
            Pending::InitProducer(media) => {
                let id = message.and_then(|m| m.get("id")).and_then(Value::as_str).unwrap_or_default().to_string();
                if let Some(p) = self.publications.iter_mut().find(|p| p.media == media) {
                    p.producer_id = Some(id.clone());
                }
                self.events.push_back(ParticipantEvent::ProducerCreated { media, id });
            }
        }
    }

    fn connect(&mut self, cts: bool) {
        let (state, transport) =
            if cts { (&mut self.cts_connect, &self.cts) } else { (&mut self.stc_connect, &self.stc) };
        if *state != ConnectState::Idle {
            return;
        }
        let Some(t) = transport else { return };
        *state = ConnectState::Requested;
        let mut dtls = t.dtls_parameters();
        if self.wrong_fingerprint {
            dtls["fingerprints"][0]["value"] = json!(vec!["00"; 32].join(":"));
        }
        if cts {
            self.request(name::CONNECT_CTS_TRANSPORT, json!({"dtlsParameters": dtls}), Pending::ConnectCts);
        } else {
            self.request(name::CONNECT_STC_TRANSPORT, json!({"dtlsParameters": dtls}), Pending::ConnectStc);
        }
    }

    fn start_publishing(&mut self, _now: Instant) {
        if !self.connected || self.wanted.is_empty() {
            return;
        }
        if self.cts_connect != ConnectState::Done {
            self.connect(true);
            return;
        }
        for what in std::mem::take(&mut self.wanted) {
            let media = what.media();
            // A new producer of a type replaces the old one, whose sending stops.
            if let Some(i) = self.publications.iter().position(|p| p.media == media) {
                let old = self.publications.remove(i);
                if let Some(cts) = self.cts.as_mut() {
                    cts.rtc.direct_api().remove_media(old.mid);
                    cts.drain();
                }
            }
            let mid_text = self.next_mid.to_string();
            self.next_mid += 1;
            let mid = Mid::from(mid_text.as_str());
            let cts = self.cts.as_mut().expect("connected participants have transports");
            let (source, params) = match what {
                Publish::Audio { bytes } => {
                    let ssrc: u32 = rand::random::<u32>() | 1;
                    let mut api = cts.rtc.direct_api();
                    api.declare_media(mid, MediaKind::Audio);
                    api.declare_stream_tx(ssrc.into(), None, mid, None);
                    let params = json!({
                        "mid": mid_text,
                        "codecs": [{"mimeType": "audio/opus", "payloadType": BROWSER_OPUS_PT, "clockRate": 48000, "channels": 2,
                                    "parameters": {"minptime": 10, "useinbandfec": 1},
                                    "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}, {"type": "nack", "parameter": ""}]}],
                        "headerExtensions": extensions_json(MediaKind::Audio),
                        "encodings": [{"ssrc": ssrc, "dtx": false}],
                        "rtcp": {"cname": "participant", "reducedSize": true},
                        "msid": "stream audio",
                    });
                    (Source::Audio { source: AudioSource::new(bytes), ssrc }, params)
                }
                Publish::Video { bitrates, fps, .. } => {
                    let simulcast = bitrates.len() > 1;
                    let mut api = cts.rtc.direct_api();
                    api.declare_media(mid, MediaKind::Video);
                    let mut layers = Vec::new();
                    let mut encodings = Vec::new();
                    for (i, bitrate) in bitrates.iter().enumerate() {
                        let ssrc: u32 = rand::random::<u32>() | 1;
                        let rtx = ssrc.wrapping_add(7);
                        let rid = simulcast.then(|| Rid::from(format!("r{i}").as_str()));
                        api.declare_stream_tx(ssrc.into(), Some(rtx.into()), mid, rid);
                        if simulcast {
                            encodings.push(json!({"active": true, "scaleResolutionDownBy": 1 << (bitrates.len() - 1 - i),
                                "maxBitrate": bitrate, "rid": format!("r{i}"), "scalabilityMode": "L1T3", "dtx": false}));
                        } else {
                            encodings.push(json!({"ssrc": ssrc, "rtx": {"ssrc": rtx}, "dtx": false}));
                        }
                        layers.push(Layer { source: VideoSource::new(*bitrate, fps), ssrc, rid });
                    }
                    let params = json!({
                        "mid": mid_text,
                        "codecs": [
                            {"mimeType": "video/VP8", "payloadType": BROWSER_VP8_PT, "clockRate": 90000, "parameters": {},
                             "rtcpFeedback": [{"type": "transport-cc", "parameter": ""}, {"type": "ccm", "parameter": "fir"},
                                              {"type": "nack", "parameter": ""}, {"type": "nack", "parameter": "pli"}]},
                            {"mimeType": "video/rtx", "payloadType": BROWSER_VP8_RTX_PT, "clockRate": 90000, "parameters": {"apt": BROWSER_VP8_PT}, "rtcpFeedback": []}
                        ],
                        "headerExtensions": extensions_json(MediaKind::Video),
                        "encodings": encodings,
                        "rtcp": {"cname": if simulcast { "" } else { "participant" }, "reducedSize": true},
                        "msid": "stream video",
                    });
                    (Source::Video { layers }, params)
                }
            };
            cts.drain();
            let kind = if media == MediaType::Audio { "audio" } else { "video" };
            self.publications.push(Publication { media, mid, source, active: true, producer_id: None });
            self.request(
                name::INIT_PRODUCER,
                json!({"type": media.as_str(), "kind": kind, "rtpParameters": params}),
                Pending::InitProducer(media),
            );
        }
    }

    fn accept_consumer(&mut self, id: Value, payload: Value) {
        let Some(stc) = self.stc.as_mut() else { return };
        let params = &payload["rtpParameters"];
        let mid_text = params["mid"].as_str().unwrap_or_default().to_string();
        let mid = Mid::from(mid_text.as_str());
        let kind = if payload["kind"] == "audio" { MediaKind::Audio } else { MediaKind::Video };
        let ssrc = params["encodings"][0]["ssrc"].as_u64().unwrap_or(0) as u32;
        let rtx = params["encodings"][0]["rtx"]["ssrc"].as_u64().map(|s| s as u32);
        let payload_types: Vec<u8> = params["codecs"]
            .as_array()
            .map(|c| c.iter().filter_map(|c| c["payloadType"].as_u64()).map(|p| p as u8).collect())
            .unwrap_or_default();
        let mut api = stc.rtc.direct_api();
        api.declare_media(mid, kind);
        let rx = api.expect_stream_rx(ssrc.into(), rtx.map(Into::into), mid, None);
        rx.suppress_nack(kind == MediaKind::Audio);
        stc.drain();
        let consumer_id = payload["id"].as_str().unwrap_or_default().to_string();
        self.consumers_added += 1;
        self.receptions.insert(
            ssrc,
            Reception {
                consumer_id: consumer_id.clone(),
                session_id: payload["sessionId"].clone(),
                media: payload["type"].as_str().unwrap_or_default().to_string(),
                ssrc,
                rtx_ssrc: rtx,
                payload_types,
                mid: mid_text,
                added: self.consumers_added,
                ..Default::default()
            },
        );
        self.events.push_back(ParticipantEvent::ConsumerAdded {
            consumer_id,
            session_id: payload["sessionId"].clone(),
            media: payload["type"].as_str().unwrap_or_default().to_string(),
            kind: payload["kind"].as_str().unwrap_or_default().to_string(),
            active: payload["active"].as_bool().unwrap_or(false),
        });
        self.reply(id, None);
    }

    /// A datagram that arrived at one of our two local addresses.
    pub fn handle_datagram(&mut self, now: Instant, local: SocketAddr, source: SocketAddr, data: &[u8]) {
        let transport = if local == self.cts_local { self.cts.as_mut() } else { self.stc.as_mut() };
        if let Some(t) = transport {
            t.handle_datagram(now, source, data);
        }
        self.after_input(now);
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        for t in [self.cts.as_mut(), self.stc.as_mut()].into_iter().flatten() {
            if t.next_timeout().is_some_and(|at| at <= now) {
                t.handle_timeout(now);
            }
        }
        self.generate(now);
        self.after_input(now);
    }

    /// Writes the media that is due.
    fn generate(&mut self, now: Instant) {
        let Some(cts) = self.cts.as_mut() else { return };
        if !cts.connected {
            return;
        }
        let mut wrote = false;
        for p in &mut self.publications {
            if !p.active || p.producer_id.is_none() {
                continue;
            }
            match &mut p.source {
                Source::Audio { source, ssrc } => {
                    self.generated.clear();
                    source.generate(now, &mut self.generated);
                    for g in self.generated.drain(..) {
                        write(cts, *ssrc, BROWSER_OPUS_PT, g, false, now);
                        wrote = true;
                    }
                }
                Source::Video { layers } => {
                    for layer in layers.iter_mut() {
                        self.generated.clear();
                        layer.source.generate(now, &mut self.generated);
                        for g in self.generated.drain(..) {
                            write(cts, layer.ssrc, BROWSER_VP8_PT, g, true, now);
                            wrote = true;
                        }
                    }
                }
            }
        }
        if wrote {
            cts.handle_timeout(now);
        }
    }

    fn after_input(&mut self, now: Instant) {
        let mut keyframes = Vec::new();
        if let Some(cts) = self.cts.as_mut() {
            while let Some(e) = cts.poll_event() {
                if let Event::KeyframeRequest(k) = e {
                    keyframes.push((k.mid, k.rid));
                }
            }
        }
        for (mid, rid) in keyframes {
            for p in &mut self.publications {
                if p.mid != mid {
                    continue;
                }
                if let Source::Video { layers } = &mut p.source {
                    for l in layers.iter_mut().filter(|l| rid.is_none() || l.rid == rid) {
                        l.source.request_keyframe();
                    }
                }
            }
        }
        if let Some(stc) = self.stc.as_mut() {
            while let Some(e) = stc.poll_event() {
                if let Event::SenderFeedback(feedback) = &e {
                    let info = &feedback.sender_info;
                    if let Some(r) = self.receptions.get_mut(&*info.ssrc) {
                        r.sender_reports += 1;
                        r.reported_packets = info.sender_packet_count;
                        r.reported_rtp_time = info.rtp_time.numer();
                    }
                }
                if let Event::RtpPacket(packet) = e {
                    let ssrc = *packet.header.ssrc;
                    let Some(r) = self.receptions.get_mut(&ssrc) else { continue };
                    let seq = *packet.seq_no;
                    r.packets += 1;
                    r.bytes += packet.payload.len() as u64;
                    if !r.payload_types.contains(&*packet.header.payload_type) {
                        r.wrong_payload_type += 1;
                    }
                    let newest = r.highest_seq.is_none_or(|h| seq > h);
                    // Only packets that directly follow the previous one say something about
                    // continuity (a lost frame legitimately skips a picture id).
                    let adjacent = r.highest_seq.is_some_and(|h| seq == h + 1);
                    if !newest {
                        r.out_of_order += 1;
                    }
                    if !adjacent {
                        r.last_picture_id = None;
                    }
                    if newest {
                        let ts = packet.header.timestamp;
                        if r.last_timestamp.is_some_and(|last| (ts.wrapping_sub(last) as i32) < 0) {
                            r.timestamp_regressions += 1;
                        }
                        r.last_timestamp = Some(ts);
                        if r.media != "audio"
                            && let Ok(d) = str0m::rtp::Vp8Descriptor::parse(&packet.payload)
                            && let Some(pid) = d.picture_id()
                        {
                            if let Some(last) = r.last_picture_id
                                && pid != last
                                && pid != (last + 1) & 0x7fff
                            {
                                r.picture_id_jumps += 1;
                            }
                            r.last_picture_id = Some(pid);
                        }
                    }
                    r.lowest_seq = Some(r.lowest_seq.map_or(seq, |l| l.min(seq)));
                    r.highest_seq = Some(r.highest_seq.map_or(seq, |h| h.max(seq)));
                    if r.window.insert(seq) {
                        r.distinct += 1;
                    }
                    r.first_at.get_or_insert(now);
                    r.last_at = Some(now);
                    if ringsfu_core::sfu::forward::keyframe::starts_keyframe(
                        ringsfu_core::sfu::ortc::Mime::Vp8,
                        &packet.payload,
                    ) && r.media != "audio"
                    {
                        r.keyframes += 1;
                    }
                    if let Some(stamp) = read_stamp(&packet.payload) {
                        let now_us = super::media::now_us();
                        let latency = now_us.saturating_sub(stamp.sent_at_us);
                        let transit = now_us as i64 - stamp.sent_at_us as i64;
                        if let Some(last) = r.last_transit_us {
                            r.jitter_us += ((transit - last).abs() as f64 - r.jitter_us) / 16.0;
                        }
                        r.last_transit_us = Some(transit);
                        if self.record_latencies {
                            r.latencies_us.push(latency);
                        }
                        if let Some(h) = self.latency_histograms.as_mut() {
                            let h = if r.media == "audio" { &mut h.audio } else { &mut h.video };
                            let _ = h.record(latency.max(1));
                        }
                    }
                }
            }
        }
        let both = self.cts.as_ref().is_some_and(|t| t.connected || self.publications.is_empty())
            && self.stc.as_ref().is_some_and(|t| t.connected);
        if both && !self.media_connected {
            self.media_connected = true;
            self.events.push_back(ParticipantEvent::MediaConnected);
        }
    }

    // ---- outputs ---------------------------------------------------------------------------

    /// The next envelope to send on the bus.
    pub fn poll_envelope(&mut self) -> Option<Value> {
        self.outbox.pop_front()
    }

    /// The next datagram to send: (from our local address, to, contents).
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, SocketAddr, Vec<u8>)> {
        for t in [self.cts.as_mut(), self.stc.as_mut()].into_iter().flatten() {
            if let Some((to, data)) = t.poll_transmit() {
                return Some((t.local, to, data));
            }
        }
        None
    }

    pub fn poll_event(&mut self) -> Option<ParticipantEvent> {
        self.events.pop_front()
    }

    pub fn next_timeout(&self) -> Option<Instant> {
        let transports = [self.cts.as_ref(), self.stc.as_ref()].into_iter().flatten().filter_map(|t| t.next_timeout());
        let sources = self
            .publications
            .iter()
            .filter(|p| p.active && p.producer_id.is_some())
            .flat_map(|p| match &p.source {
                Source::Audio { source, .. } => vec![source.next_due()],
                Source::Video { layers } => layers.iter().map(|l| l.source.next_due()).collect(),
            })
            .map(|due| due.unwrap_or_else(Instant::now));
        transports.chain(sources).min()
    }

    /// The reception of a publishing session's media type: the newest when there were several
    /// (a replaced producer, or a session that left and came back with the same id).
    pub fn reception(&self, session_id: &Value, media: &str) -> Option<&Reception> {
        self.receptions.values().filter(|r| &r.session_id == session_id && r.media == media).max_by_key(|r| r.added)
    }

    /// The SSRCs of a video publication's layers (lowest first).
    pub fn layer_ssrcs(&self, media: MediaType) -> Vec<u32> {
        self.publications
            .iter()
            .filter(|p| p.media == media)
            .flat_map(|p| match &p.source {
                Source::Audio { ssrc, .. } => vec![*ssrc],
                Source::Video { layers } => layers.iter().map(|l| l.ssrc).collect(),
            })
            .collect()
    }

    /// Turns one simulcast layer's sending on or off (a browser whose uplink shrank).
    pub fn set_layer_bitrate(&mut self, media: MediaType, layer: usize, bitrate: u64) {
        for p in &mut self.publications {
            if p.media == media
                && let Source::Video { layers } = &mut p.source
                && let Some(l) = layers.get_mut(layer)
            {
                l.source.bitrate = bitrate;
            }
        }
    }
}

fn write(cts: &mut ClientTransport, ssrc: u32, pt: u8, g: Generated, video: bool, now: Instant) {
    let mut api = cts.rtc.direct_api();
    let Some(stream) = api.stream_tx(&Ssrc::from(ssrc)) else { return };
    let mut ext = str0m::rtp::ExtensionValues::default();
    if !video {
        ext.audio_level = Some(-30);
        ext.voice_activity = Some(true);
    }
    stream.write_rtp(
        RtpWrite::new(pt.into(), g.seq.into(), g.timestamp, now, g.payload)
            .marker(g.marker)
            .nackable(video)
            .ext_vals(ext),
    );
    cts.drain();
}

fn extensions_json(kind: MediaKind) -> Value {
    let uris: Vec<Value> = BROWSER_EXTENSIONS
        .iter()
        .filter(|(_, ext, _)| match kind {
            MediaKind::Audio => !matches!(
                ext,
                str0m::rtp::Extension::RtpStreamId
                    | str0m::rtp::Extension::RepairedRtpStreamId
                    | str0m::rtp::Extension::VideoOrientation
            ),
            MediaKind::Video => !matches!(ext, str0m::rtp::Extension::AudioLevel),
        })
        .map(|(id, _, uri)| json!({"uri": uri, "id": id, "encrypt": false, "parameters": {}}))
        .collect();
    Value::Array(uris)
}

/// The receive capabilities mediasoup-client would report for a device that can decode every
/// codec the router offers: router payload types and extension ids.
pub fn device_capabilities(router: &Value) -> Value {
    let codecs = router["codecs"].clone();
    let exts: Vec<Value> = router["headerExtensions"]
        .as_array()
        .map(|l| l.iter().filter(|e| e["direction"] == "sendrecv").cloned().collect())
        .unwrap_or_default();
    json!({"codecs": codecs, "headerExtensions": exts})
}
