//! The bodies of the `cargo fuzz` targets in `fuzz/`, one function per target. The targets call
//! them on libFuzzer's inputs; `tests/fuzz_corpus.rs` calls them on every file of the committed
//! corpus, on stable, so an input that once crashed keeps being checked.
//!
//! Each takes arbitrary bytes and must not panic. The assertions are properties that hold for
//! every input.

use crate::control::bus::credentials;
use crate::control::directory::{ChannelRequest, Directory};
use ringsfu_common::auth::{self, JwtError, Key};
use ringsfu_core::protocol::envelope::{self, Envelope};
use ringsfu_core::protocol::messages::{ClientMessage, DtlsParameters};
use ringsfu_core::sfu::codecs::{AudioCodec, VideoCodec};
use ringsfu_core::sfu::demux::{self, PeekIds};
use ringsfu_core::sfu::ortc::consumer_params::{self, ConsumerIdentity};
use ringsfu_core::sfu::ortc::producer_params::{self, MAX_ENCODINGS, ProducerParams};
use ringsfu_core::sfu::ortc::{DeviceCaps, RouterCaps};
use serde_json::{Value, json};
use std::sync::OnceLock;
use str0m::media::MediaKind;

/// The clock tokens are checked against (2027-01-15), so the corpus replays the same way forever.
pub const NOW: f64 = 1_800_000_000.0;

/// The global key (`AUTH_KEY`) tokens are verified with: base64 of `secret-key-for-tests`.
pub const GLOBAL_KEY: &str = "c2VjcmV0LWtleS1mb3ItdGVzdHM=";

/// The key of the keyed channel: a uuid4 string, as Odoo 18 sends a channel's `key`.
pub const CHANNEL_KEY: &str = "5b0e3c1d-8a4f-4e2b-9c7d-1f6a2b3c4d5e";

/// Channel ids are random; a frame names the fixture's channels by these stand-ins, which the
/// body replaces with their ids before authenticating it.
pub const OPEN_CHANNEL: &str = "00000000-0000-4000-8000-00000000000a";
pub const KEYED_CHANNEL: &str = "00000000-0000-4000-8000-00000000000b";

struct Fixture {
    global_key: Key,
    directory: Directory,
    open_id: String,
    keyed_id: String,
    router: RouterCaps,
    /// A device that can receive every codec and extension of the router.
    device: DeviceCaps,
    /// A VP8 simulcast camera and an Opus microphone, as browsers publish them.
    producers: [ProducerParams; 2],
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let directory = Directory::new(1);
        let channel = |issuer: &str, key: Option<Key>| {
            let request = ChannelRequest { remote_address: "fuzz", issuer, key, webrtc: true };
            directory.get_or_create(request, |_| 0, |_| {}).0.id.to_string()
        };
        let open_id = channel("odoo:open", None);
        let keyed_id = channel("odoo:keyed", Some(Key::from_base64(CHANNEL_KEY).expect("a uuid is base64")));
        let router = RouterCaps::new(&AudioCodec::ALL, &VideoCodec::ALL);
        let device = DeviceCaps::parse(router.to_json()).expect("router capabilities are device capabilities");
        let camera = json!({
            "mid": "1",
            "codecs": [
                {"mimeType": "video/VP8", "payloadType": 96, "clockRate": 90000},
                {"mimeType": "video/rtx", "payloadType": 97, "clockRate": 90000, "parameters": {"apt": 96}}
            ],
            "headerExtensions": [
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:mid", "id": 4},
                {"uri": "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id", "id": 10}
            ],
            "encodings": [{"rid": "r0", "scalabilityMode": "L1T3"}, {"rid": "r1", "maxBitrate": 900000}]
        });
        let microphone = json!({
            "codecs": [{"mimeType": "audio/opus", "payloadType": 111, "clockRate": 48000, "channels": 2}],
            "encodings": [{"ssrc": 1234}]
        });
        let producers = [
            producer_params::parse(MediaKind::Video, &camera, &router).expect("the camera fixture is valid"),
            producer_params::parse(MediaKind::Audio, &microphone, &router).expect("the microphone fixture is valid"),
        ];
        Fixture {
            global_key: Key::from_base64(GLOBAL_KEY).expect("the global key is base64"),
            directory,
            open_id,
            keyed_id,
            router,
            device,
            producers,
        }
    })
}

/// `jwt`: a token verified against the global key; the same text as a base64 key; the same text,
/// when it is a JSON object, as claims to sign and verify.
pub fn jwt(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let key = &fixture().global_key;
    if let Ok(claims) = auth::verify(text, key, NOW) {
        // Everything before the signature check passed, so another key can only fail there.
        assert_eq!(auth::verify(text, &Key::from_bytes(b"another key"), NOW), Err(JwtError::BadSignature));
        if let Some(resigned) = sign_and_verify(&claims, key) {
            assert!(resigned.keys().eq(claims.keys()), "re-signing changed the claims");
        }
    }
    if let Ok(decoded) = Key::from_base64(text) {
        assert!(!decoded.as_bytes().is_empty());
    }
    if let Ok(Value::Object(claims)) = serde_json::from_str::<Value>(text) {
        sign_and_verify(&claims, key);
    }
}

/// A token ringsfu signs verifies, unless a time rule refuses its claims (`None`).
fn sign_and_verify(claims: &auth::Claims, key: &Key) -> Option<auth::Claims> {
    match auth::verify(&auth::sign(claims, key), key, NOW) {
        Ok(verified) => Some(verified),
        Err(JwtError::Expired | JwtError::NotYetValid | JwtError::IssuedInFuture | JwtError::TimeNotANumber(_)) => None,
        Err(e) => panic!("a token ringsfu signed is refused: {e}"),
    }
}

/// `bus_frame`: the text as the first frame of a connection (credentials), then as a later one:
/// its envelopes decoded, each message parsed as the session would, an `INIT_PRODUCER`'s
/// parameters validated and a reply read as the device capabilities of `INIT_TRANSPORTS`.
pub fn bus_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let f = fixture();
    let credentials = text.replace(OPEN_CHANNEL, &f.open_id).replace(KEYED_CHANNEL, &f.keyed_id);
    if let Ok(who) = credentials::authenticate(&credentials, &f.directory, &f.global_key, NOW) {
        assert!(who.channel.id.to_string() == f.open_id || who.channel.id.to_string() == f.keyed_id);
    }
    let Ok(envelopes) = envelope::decode_frame(text) else { return };
    for envelope in envelopes {
        match envelope {
            Envelope::Message { name, payload } | Envelope::Request { name, payload, .. } => {
                if let Ok(ClientMessage::InitProducer { kind, rtp_parameters, .. }) =
                    ClientMessage::parse(&name, payload)
                {
                    // The shard's mapping; a kind that fits no type is refused before validation.
                    let kind = match kind.as_str() {
                        "audio" => MediaKind::Audio,
                        "video" => MediaKind::Video,
                        _ => continue,
                    };
                    producer(kind, &rtp_parameters);
                }
            }
            Envelope::Response { message: Some(message), .. } => consumers(&message),
            Envelope::Response { message: None, .. } => {}
        }
    }
}

/// `rtp_parameters`: a JSON value as a producer's `rtpParameters` of either kind, as
/// `dtlsParameters`, and as a device's `rtpCapabilities` receiving the fixture's producers.
pub fn rtp_parameters(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    if let Ok(dtls) = DtlsParameters::parse(&value) {
        assert!(!dtls.fingerprints.is_empty());
    }
    producer(MediaKind::Audio, &value);
    producer(MediaKind::Video, &value);
    consumers(&value);
}

fn producer(kind: MediaKind, rtp_parameters: &Value) {
    let f = fixture();
    let Ok(p) = producer_params::parse(kind, rtp_parameters, &f.router) else { return };
    assert!(!p.codecs.is_empty());
    assert!((1..=MAX_ENCODINGS).contains(&p.encodings.len()));
    for c in &p.codecs {
        assert_eq!(p.router_payload_type(c.payload_type), Some(c.router_payload_type));
        assert!(f.router.codec_by_pt(c.router_payload_type).is_some_and(|r| r.mime == c.mime));
    }
    let _ = (p.max_bitrate(), p.consumer_scalability_mode());
    derive(&p, &f.device);
}

fn consumers(device_capabilities: &Value) {
    let Some(device) = DeviceCaps::parse(device_capabilities) else { return };
    for p in &fixture().producers {
        derive(p, &device);
    }
}

fn derive(producer: &ProducerParams, device: &DeviceCaps) {
    let who = ConsumerIdentity { mid: "0", ssrc: 1111, rtx_ssrc: 2222, cname: "fuzz" };
    if let Some(c) = consumer_params::derive(&fixture().router, producer, device, who) {
        assert!(!c.codecs.is_empty());
        assert!(c.json["codecs"].as_array().is_some_and(|codecs| codecs.len() >= c.codecs.len()));
    }
}

/// `udp_demux`: a datagram classified and peeked as the shard does before anything else.
pub fn udp_demux(data: &[u8]) {
    let stun = demux::is_stun(data);
    let rtp = demux::is_rtp(data);
    assert!(!(stun && rtp), "a datagram is STUN or RTP, not both");
    // What the shard drops by its first byte is never STUN or RTP.
    assert!(demux::is_webrtc(data) || (!stun && !rtp));
    // RFC 7983: a first byte of 20-63 is DTLS. RFC 5761: a second byte of 192-223 is an RTCP
    // packet type (payload types 64-95 with the marker bit).
    if data.first().is_some_and(|b| (20..=63).contains(b)) {
        assert!(!stun && !rtp);
    }
    if data.get(1).is_some_and(|b| (192..=223).contains(b)) {
        assert!(!rtp);
    }
    assert!(demux::stun_local_ufrag(data).is_none() || stun);
    assert!(!demux::stun_nominates(data) || stun);
    let ssrc = demux::rtp_ssrc(data);
    assert_eq!(ssrc.is_some(), rtp);
    // A browser's ids (one-byte header range) and the router's.
    let ids = [
        PeekIds { mid: Some(4), rid: Some(10), rrid: Some(11), ..Default::default() },
        PeekIds { mid: Some(1), rid: Some(2), rrid: Some(3), ..Default::default() },
    ];
    for ids in ids {
        let Some(peek) = demux::peek_rtp(data, ids) else {
            // Only CSRCs or a header extension block that overrun the datagram make RTP unreadable.
            let csrcs_fit = data.len() >= 12 + 4 * usize::from(data.first().map_or(0, |b| b & 0x0f));
            assert!(!rtp || data[0] & 0x10 != 0 || !csrcs_fit, "RTP whose header fits must peek");
            continue;
        };
        assert_eq!(Some(peek.ssrc), ssrc);
        // The payload starts inside the datagram: the SRTP opening slices there.
        assert!(peek.header_len >= 12 && peek.header_len <= data.len());
        for value in [peek.mid, peek.rid, peek.rrid].into_iter().flatten() {
            assert!(data.as_ptr_range().contains(&value.as_ptr()) || value.is_empty());
        }
    }
}
