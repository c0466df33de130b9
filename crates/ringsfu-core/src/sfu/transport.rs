//! A mediasoup transport: one str0m `Rtc` (ICE-lite, DTLS, SRTP, RTP mode) for one direction of
//! one session, its SRTP contexts and its SSRC routes. The shard owns the transports: its
//! `Context` drains and times their `Rtc`s, and the session's router handles their datagrams
//! and events (`router::transports`).
//!
//! The receiving (`cts`) transport's `Rtc` is built when its first producer arrives: str0m fixes
//! the header extension ids and payload types it parses at build time, and only the producer's
//! `rtpParameters` say which ones the browser chose. STUN that arrives before that is kept and
//! replayed.

use super::arena::Key;
use super::consumer::ConsumerKey;
use super::demux::{FastMap, PeekIds};
use super::ingress::Ingress;
use super::ortc::Mime;
use super::ortc::caps::uri;
use super::ortc::producer_params::ProducerParams;
use super::producer::ProducerKey;
use super::router::RouterKey;
use super::settings::SfuSettings;
use crate::protocol::messages::{Direction, DtlsParameters};
use crate::sfu::congestion::SendSideEstimator;
use crate::sfu::ids::SessionRef;
use crate::sfu::srtp::{self, KeySlot, SrtcpReceiver, SrtpSender};
use rand::Rng;
use serde_json::{Value, json};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Mid};
use str0m::net::{Protocol, TcpType};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, IceCreds, Rtc, RtcConfig};
use uuid::Uuid;

pub type TransportKey = Key<Transport>;

/// ICE candidate priorities (RFC 8445 §5.1.2.1: type preference << 24 | local preference << 8 |
/// 256 - component). UDP's is mediasoup's host candidate (type preference 64, local 10000). The
/// passive TCP candidate has a lower type preference, so a browser that reaches both uses UDP, and
/// the local preference RFC 6544 §4.2 gives a passive host candidate (direction 4 << 13, plus
/// the top other-preference).
pub const UDP_CANDIDATE_PRIORITY: u32 = (64 << 24) | (10_000 << 8) | 255;
pub const TCP_CANDIDATE_PRIORITY: u32 = (32 << 24) | (((4 << 13) | 8191) << 8) | 255;

/// Remote addresses remembered per transport (a network change adds one; the oldest goes).
pub(crate) const MAX_ADDRS: usize = 4;
/// STUN requests kept for a receiving transport whose `Rtc` is not built yet.
pub(crate) const MAX_EARLY_STUN: usize = 8;
/// How often str0m gets the time on a sending transport that carries only ringsfu's own streams
/// (it then has nothing time-critical: ICE consent and DTLS are driven by what arrives).
pub(crate) const HOUSEKEEPING_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);
/// Timeouts fed to one `Rtc` in one wake-up (a keyframe to one subscriber is ~20-50 packets);
/// the rest goes out on the next wake-up, so one transport cannot hold the shard.
pub(crate) const MAX_RELEASES_PER_POKE: usize = 256;

/// What peeking at a datagram's RTP header found.
pub(crate) enum SsrcBinding {
    NotRtp,
    Known,
    Unknown,
}

/// Where an incoming SSRC of a receiving transport goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SsrcRoute {
    pub(crate) producer: ProducerKey,
    pub(crate) layer: u8,
    pub(crate) rtx: bool,
}

pub struct Transport {
    pub(crate) session: SessionRef,
    /// The router of the session's channel.
    pub(crate) router: RouterKey,
    pub(crate) direction: Direction,
    pub(crate) id: Uuid,
    pub(crate) ice: IceCreds,
    /// Boxed: an `Rtc` is ~10 KB, and the forwarding loop touches a few fields of hundreds of
    /// transports per packet; inline, those fields would lie a page apart.
    pub(crate) rtc: Option<Box<Rtc>>,
    /// The browser's ICE ufrag, learned from its first binding request.
    pub(crate) remote_ufrag: Option<String>,
    /// `CONNECT_*_TRANSPORT` parameters, applied when the `Rtc` exists.
    pub(crate) dtls: Option<DtlsParameters>,
    pub(crate) dtls_started: bool,
    /// DTLS done, SRTP keys installed.
    pub(crate) connected: bool,
    pub(crate) addrs: SmallVec<[SocketAddr; MAX_ADDRS]>,
    /// The deadline the `Rtc` asked for last.
    pub(crate) timeout: Option<Instant>,
    /// The deadline armed in the shard's timer table (never later than `timeout`).
    pub(crate) armed: Option<Instant>,
    /// A `write_rtp`/keyframe request is queued and needs an `Input::Timeout` to go out.
    pub(crate) needs_poke: bool,
    pub(crate) early_stun: Vec<(Protocol, SocketAddr, Vec<u8>)>,
    /// Receiving side: SSRC → producer layer.
    pub(crate) ssrcs: FastMap<u32, SsrcRoute>,
    /// Receiving side: payload types and extension ids the `Rtc` was built with.
    pub(crate) built_payload_types: Vec<u8>,
    pub(crate) built_extensions: ExtensionMap,
    /// Receiving side: the extension ids its packets are read with.
    pub(crate) peek: PeekIds,
    /// Receiving side: ringsfu opens and answers the publisher's packets itself (AES-GCM).
    pub(crate) ingress: Option<Box<Ingress>>,
    /// Receiving side: the CNAME consumers of this transport's producers carry.
    pub(crate) cname: String,
    pub(crate) cname_fixed: bool,
    /// Sending side: next consumer mid, and consumers by mid.
    pub(crate) next_mid: u32,
    pub(crate) consumers_by_mid: HashMap<Mid, ConsumerKey>,
    /// Sending side: latest egress bandwidth estimate, bit/s.
    pub(crate) estimate: Option<u64>,
    /// Where the DTLS handshake leaves the SRTP keying material (sending side).
    pub(crate) keys: Option<Arc<KeySlot>>,
    /// Sending side: the SRTP session ringsfu seals its own packets with (GCM profiles).
    pub(crate) srtp: Option<SrtpSender>,
    /// Sending side: opens the subscriber's RTCP about those packets (NACK, PLI, TWCC feedback).
    pub(crate) rtcp_in: Option<SrtcpReceiver>,
    /// Sending side: the next transport-wide sequence number of ringsfu's own video packets.
    pub(crate) twcc_next: u16,
    /// Sending side: the downlink estimate from the subscriber's transport-wide feedback, made
    /// when the first packet carrying a transport-wide sequence number leaves.
    pub(crate) estimator: Option<Box<SendSideEstimator>>,
    /// Sending side: consumer streams declared on the `Rtc` (str0m sends them).
    pub(crate) str0m_streams: u32,
    /// When the `Rtc` last ran on its own timer.
    pub(crate) last_timer_poke: Option<Instant>,
    /// When str0m last reported lost ICE consent, while it stays lost.
    pub(crate) consent_lost: Option<Instant>,
    /// Where media goes: the pair the browser nominated (its last binding request with
    /// USE-CANDIDATE), or where str0m last sent DTLS or RTCP.
    pub(crate) media_dest: Option<SocketAddr>,
}

impl Transport {
    /// The remote addresses that passed ICE, oldest first.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Receiving side: the extension ids its packets are read with.
    pub fn peek(&self) -> PeekIds {
        self.peek
    }

    /// Receiving side: whether an SSRC is bound to a producer layer.
    pub fn routes_ssrc(&self, ssrc: u32) -> bool {
        self.ssrcs.contains_key(&ssrc)
    }

    pub fn new(session: SessionRef, router: RouterKey, direction: Direction, rng: &mut impl Rng) -> Transport {
        Transport {
            session,
            router,
            direction,
            id: uuid::Builder::from_random_bytes(rng.random()).into_uuid(),
            ice: IceCreds { ufrag: random_token(rng, 16), pass: random_token(rng, 32) },
            rtc: None,
            remote_ufrag: None,
            dtls: None,
            dtls_started: false,
            connected: false,
            addrs: SmallVec::new(),
            timeout: None,
            armed: None,
            needs_poke: false,
            consent_lost: None,
            early_stun: Vec::new(),
            ssrcs: FastMap::default(),
            built_payload_types: Vec::new(),
            built_extensions: ExtensionMap::empty(),
            peek: PeekIds::default(),
            ingress: None,
            cname: random_token(rng, 16),
            cname_fixed: false,
            next_mid: 0,
            consumers_by_mid: HashMap::new(),
            estimate: None,
            keys: None,
            srtp: None,
            rtcp_in: None,
            twcc_next: rng.random(),
            estimator: None,
            media_dest: None,
            str0m_streams: 0,
            last_timer_poke: None,
        }
    }

    /// mediasoup `TransportOptions` for `INIT_TRANSPORTS`.
    pub fn options(&self, settings: &SfuSettings, candidate: SocketAddr) -> Value {
        let ip = candidate.ip().to_string();
        let mut candidates = vec![json!({
            "foundation": "udpcandidate",
            "priority": UDP_CANDIDATE_PRIORITY,
            "ip": ip,
            "address": ip,
            "protocol": "udp",
            "port": candidate.port(),
            "type": "host",
        })];
        if settings.rtc_tcp {
            candidates.push(json!({
                "foundation": "tcpcandidate",
                "priority": TCP_CANDIDATE_PRIORITY,
                "ip": ip,
                "address": ip,
                "protocol": "tcp",
                "port": candidate.port(),
                "type": "host",
                "tcpType": "passive",
            }));
        }
        json!({
            "id": self.id.to_string(),
            "iceParameters": {"usernameFragment": self.ice.ufrag, "password": self.ice.pass, "iceLite": true},
            "iceCandidates": candidates,
            "dtlsParameters": {
                "fingerprints": [{"algorithm": "sha-256", "value": settings.dtls_fingerprint}],
                "role": "auto",
            },
        })
    }

    /// Notes a packet stamped with transport-wide sequence number `seq` as sent (`size` bytes
    /// sealed): the next number follows it, and the estimate learns of it.
    pub fn sent_twcc(&mut self, seq: u16, size: usize, probe: Option<u32>, now: Instant) {
        self.twcc_next = seq.wrapping_add(1);
        self.estimator
            .get_or_insert_with(|| Box::new(SendSideEstimator::new(super::allocator::INITIAL_ESTIMATE, now)))
            .on_packet_sent(seq, size, probe, now);
    }

    /// Peek ids for binding unknown SSRCs of this receiving transport (ids are per browser
    /// PeerConnection, so the first producer's are every producer's).
    pub(crate) fn peek_ids(&self) -> PeekIds {
        let id = |e: Extension| self.built_extensions.id_of(e);
        PeekIds {
            mid: id(Extension::RtpMid),
            rid: id(Extension::RtpStreamId),
            rrid: id(Extension::RepairedRtpStreamId),
            twcc: id(Extension::TransportSequenceNumber),
            audio_level: id(Extension::AudioLevel),
            video_orientation: id(Extension::VideoOrientation),
        }
    }
}

/// `[0-9a-z]` tokens, as mediasoup's ICE credentials.
fn random_token(rng: &mut impl Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..len).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

fn base_config(settings: &SfuSettings, ice: &IceCreds) -> RtcConfig {
    RtcConfig::new()
        .set_rtp_mode(true)
        .set_ice_lite(true)
        .set_local_ice_credentials(ice.clone())
        .set_dtls_cert(settings.dtls_cert.clone())
        .set_crypto_provider(srtp::provider())
        .clear_codecs()
        .clear_extension_map()
}

fn str0m_codec(mime: Mime) -> Option<Codec> {
    Some(match mime {
        Mime::Opus => Codec::Opus,
        Mime::Pcmu => Codec::PCMU,
        Mime::Pcma => Codec::PCMA,
        Mime::Vp8 => Codec::Vp8,
        Mime::Vp9 => Codec::Vp9,
        Mime::H264 => Codec::H264,
        Mime::Rtx => return None,
    })
}

fn format_params(mime: Mime, params: &serde_json::Map<String, Value>) -> FormatParams {
    use super::ortc::caps::param_u64;
    let mut f = FormatParams::default();
    match mime {
        Mime::H264 => {
            f.packetization_mode = param_u64(params, "packetization-mode").map(|v| v as u8);
            f.level_asymmetry_allowed = param_u64(params, "level-asymmetry-allowed").map(|v| v == 1);
            f.profile_level_id =
                params.get("profile-level-id").and_then(Value::as_str).and_then(|s| u32::from_str_radix(s, 16).ok());
        }
        Mime::Vp9 => f.profile_id = param_u64(params, "profile-id").map(|v| v as u32),
        Mime::Opus => {
            f.min_p_time = param_u64(params, "minptime").map(|v| v as u8);
            f.use_inband_fec = param_u64(params, "useinbandfec").map(|v| v == 1);
        }
        _ => {}
    }
    f
}

fn frequency(clock_rate: u32) -> Frequency {
    match clock_rate {
        48_000 => Frequency::FORTY_EIGHT_KHZ,
        90_000 => Frequency::NINETY_KHZ,
        8_000 => Frequency::EIGHT_KHZ,
        other => Frequency::new(other).unwrap_or(Frequency::NINETY_KHZ),
    }
}

/// The sending transport's `Rtc`: router payload types and extension ids; and the slot its DTLS
/// handshake leaves the SRTP keys in.
pub fn build_sending_rtc(
    settings: &SfuSettings,
    ice: &IceCreds,
    now: Instant,
    candidate: SocketAddr,
) -> (Rtc, Option<Arc<KeySlot>>) {
    let mut cfg = base_config(settings, ice);
    for c in settings.router.codecs.iter() {
        let Some(codec) = str0m_codec(c.mime) else { continue };
        cfg.codec_config().add_config(
            c.payload_type.into(),
            c.rtx_payload_type.map(Into::into),
            codec,
            frequency(c.clock_rate),
            c.channels,
            format_params(c.mime, &c.parameters),
        );
    }
    let mut exts = ExtensionMap::empty();
    for e in &settings.router.header_extensions {
        if let Some(ext) = extension_of(e.uri)
            && e.direction == super::ortc::caps::ExtDirection::SendRecv
        {
            exts.set(e.id, ext);
        }
    }
    // Send-side bandwidth estimation (TWCC): the estimate drives layer selection. With ringsfu's
    // own video egress the estimator is ringsfu's (`sfu::congestion`) and str0m's stays off: its
    // probes would carry transport-wide sequence numbers of their own on the same transport, and
    // a receiver cannot tell two such sequences apart. (A transport whose SRTP profile ringsfu
    // does not seal then keeps the initial estimate; browsers negotiate AES-GCM.)
    let initial = str0m::bwe::Bitrate::bps(super::allocator::INITIAL_ESTIMATE);
    let bwe = (!settings.own_video_egress).then_some(initial);
    let mut rtc = cfg.set_extension_map(exts).enable_bwe(bwe).build(now);
    add_candidates(&mut rtc, candidate, settings.rtc_tcp);
    (rtc, srtp::take_built_slot())
}

/// The receiving transport's `Rtc`, shaped by its first producer: the browser's payload types
/// and extension ids, plus room for later producers of the same PeerConnection.
pub fn build_receiving_rtc(
    settings: &SfuSettings,
    ice: &IceCreds,
    now: Instant,
    candidate: SocketAddr,
    first: &ProducerParams,
) -> (Rtc, Vec<u8>, ExtensionMap, Option<Arc<KeySlot>>) {
    let mut cfg = base_config(settings, ice);
    let mut pts = Vec::new();
    for c in &first.codecs {
        let codec = str0m_codec(c.mime).expect("producer media codecs are not RTX");
        cfg.codec_config().add_config(
            c.payload_type.into(),
            c.rtx_payload_type.map(Into::into),
            codec,
            frequency(c.clock_rate),
            c.channels,
            format_params(c.mime, &c.parameters),
        );
        pts.push(c.payload_type);
        pts.extend(c.rtx_payload_type);
    }
    // Later producers (the camera after the microphone) bring payload types the browser picks
    // from the dynamic range; str0m drops packets of payload types it was not built with.
    for pt in (96..=127u8).chain([0, 8]) {
        if pts.contains(&pt) {
            continue;
        }
        let (codec, clock) = match pt {
            0 => (Codec::PCMU, Frequency::EIGHT_KHZ),
            8 => (Codec::PCMA, Frequency::EIGHT_KHZ),
            _ => (Codec::Vp8, Frequency::NINETY_KHZ),
        };
        cfg.codec_config().add_config(pt.into(), None, codec, clock, None, FormatParams::default());
        pts.push(pt);
    }

    let ids = &first.extensions;
    let mut exts = ExtensionMap::empty();
    let known: [(Option<u8>, Extension, u8); 7] = [
        (ids.mid, Extension::RtpMid, 4),
        (ids.rid, Extension::RtpStreamId, 10),
        (ids.rrid, Extension::RepairedRtpStreamId, 11),
        (ids.abs_send_time, Extension::AbsoluteSendTime, 2),
        (ids.twcc, Extension::TransportSequenceNumber, 3),
        (ids.audio_level, Extension::AudioLevel, 1),
        (ids.video_orientation, Extension::VideoOrientation, 13),
    ];
    let mut used: SmallVec<[u8; 8]> = SmallVec::new();
    for (id, ext, _) in &known {
        if let Some(id) = id {
            exts.set(*id, ext.clone());
            used.push(*id);
        }
    }
    // Extensions the first producer does not carry get Chrome's default ids when free; Chrome
    // keeps one id per URI across the m-sections of a PeerConnection.
    for (id, ext, default) in &known {
        if id.is_none() && !used.contains(default) {
            exts.set(*default, ext.clone());
            used.push(*default);
        }
    }
    let rtc = cfg.set_extension_map(exts.clone()).build(now);
    // ringsfu's own ingress opens the publisher's packets with these keys.
    let slot = srtp::take_built_slot();
    let mut rtc = rtc;
    add_candidates(&mut rtc, candidate, settings.rtc_tcp);
    (rtc, pts, exts, slot)
}

/// The `Rtc`'s own candidates: its ICE-lite agent answers binding requests only on these (an
/// address and a protocol each), so a request that came over TCP needs the TCP one.
fn add_candidates(rtc: &mut Rtc, candidate: SocketAddr, tcp: bool) {
    let c = Candidate::host(candidate, "udp").expect("the shard's announced address is a valid host candidate");
    rtc.add_local_candidate(c);
    if tcp {
        let c = Candidate::builder()
            .tcp()
            .host(candidate)
            .tcptype(TcpType::Passive)
            .build()
            .expect("the shard's announced address is a valid host candidate");
        rtc.add_local_candidate(c);
    }
}

pub fn extension_of(ext_uri: &str) -> Option<Extension> {
    Some(match ext_uri {
        uri::MID => Extension::RtpMid,
        uri::RID => Extension::RtpStreamId,
        uri::RRID => Extension::RepairedRtpStreamId,
        uri::ABS_SEND_TIME => Extension::AbsoluteSendTime,
        uri::TWCC => Extension::TransportSequenceNumber,
        uri::AUDIO_LEVEL => Extension::AudioLevel,
        uri::VIDEO_ORIENTATION => Extension::VideoOrientation,
        _ => return None,
    })
}
