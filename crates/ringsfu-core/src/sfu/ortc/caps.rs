//! Router RTP capabilities: the codecs and header extensions a channel accepts, generated the way
//! mediasoup's router does from the configured codec list, so mediasoup-client's `Device.load`
//! and its matching rules see what they expect.

use super::h264;
use crate::sfu::codecs::{AudioCodec, VideoCodec};
use serde_json::{Map, Value, json};
use str0m::media::MediaKind;

/// Header extension URIs ringsfu understands.
pub mod uri {
    pub const MID: &str = "urn:ietf:params:rtp-hdrext:sdes:mid";
    pub const RID: &str = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id";
    pub const RRID: &str = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id";
    pub const ABS_SEND_TIME: &str = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time";
    pub const TWCC: &str = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01";
    pub const AUDIO_LEVEL: &str = "urn:ietf:params:rtp-hdrext:ssrc-audio-level";
    pub const VIDEO_ORIENTATION: &str = "urn:3gpp:video-orientation";
    pub const TOFFSET: &str = "urn:ietf:params:rtp-hdrext:toffset";
}

/// Codec families the router knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mime {
    Opus,
    Pcmu,
    Pcma,
    Vp8,
    Vp9,
    H264,
    Rtx,
}

impl Mime {
    pub fn parse(mime_type: &str) -> Option<Mime> {
        let (kind, name) = mime_type.split_once('/')?;
        let kind = kind.to_ascii_lowercase();
        let name = name.to_ascii_lowercase();
        match (kind.as_str(), name.as_str()) {
            ("audio", "opus") => Some(Mime::Opus),
            ("audio", "pcmu") => Some(Mime::Pcmu),
            ("audio", "pcma") => Some(Mime::Pcma),
            ("video", "vp8") => Some(Mime::Vp8),
            ("video", "vp9") => Some(Mime::Vp9),
            ("video", "h264") => Some(Mime::H264),
            ("audio" | "video", "rtx") => Some(Mime::Rtx),
            _ => None,
        }
    }

    pub fn kind(self) -> MediaKind {
        match self {
            Mime::Opus | Mime::Pcmu | Mime::Pcma => MediaKind::Audio,
            _ => MediaKind::Video,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mime::Opus => "audio/opus",
            Mime::Pcmu => "audio/PCMU",
            Mime::Pcma => "audio/PCMA",
            Mime::Vp8 => "video/VP8",
            Mime::Vp9 => "video/VP9",
            Mime::H264 => "video/H264",
            Mime::Rtx => "video/rtx",
        }
    }

    /// Codecs mediasoup can forward as simulcast (several encodings).
    pub fn supports_simulcast(self) -> bool {
        matches!(self, Mime::Vp8 | Mime::H264)
    }
}

/// One RTCP feedback entry `{type, parameter}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Feedback {
    pub kind: String,
    pub parameter: String,
}

impl Feedback {
    fn new(kind: &str, parameter: &str) -> Feedback {
        Feedback { kind: kind.into(), parameter: parameter.into() }
    }

    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "parameter": self.parameter})
    }
}

/// A codec of the router, with its preferred payload type.
#[derive(Debug, Clone)]
pub struct RouterCodec {
    pub mime: Mime,
    pub payload_type: u8,
    pub clock_rate: u32,
    /// Audio channels (1 when absent, as mediasoup normalizes).
    pub channels: Option<u8>,
    pub parameters: Map<String, Value>,
    pub feedback: Vec<Feedback>,
    /// For a media codec, the payload type of its RTX companion; for RTX, `apt`.
    pub rtx_payload_type: Option<u8>,
    pub apt: Option<u8>,
}

impl RouterCodec {
    pub fn kind(&self) -> MediaKind {
        if self.mime == Mime::Rtx {
            return MediaKind::Video;
        }
        self.mime.kind()
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("kind".into(), json!(kind_str(self.kind())));
        m.insert("mimeType".into(), json!(self.mime.name()));
        m.insert("preferredPayloadType".into(), json!(self.payload_type));
        m.insert("clockRate".into(), json!(self.clock_rate));
        if let Some(ch) = self.channels {
            m.insert("channels".into(), json!(ch));
        }
        m.insert("parameters".into(), Value::Object(self.parameters.clone()));
        m.insert("rtcpFeedback".into(), Value::Array(self.feedback.iter().map(Feedback::to_json).collect()));
        Value::Object(m)
    }
}

/// Direction of a header extension from the router's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtDirection {
    SendRecv,
    /// The router only receives it (from producers) and never sends it to consumers.
    RecvOnly,
}

#[derive(Debug, Clone)]
pub struct RouterExtension {
    pub kind: MediaKind,
    pub uri: &'static str,
    pub id: u8,
    pub direction: ExtDirection,
}

/// The router capabilities of every channel of this server (they depend only on configuration).
#[derive(Debug, Clone)]
pub struct RouterCaps {
    pub codecs: Vec<RouterCodec>,
    pub header_extensions: Vec<RouterExtension>,
    json: Value,
}

pub fn kind_str(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

/// The header extensions ringsfu offers, with mediasoup's ids. ringsfu offers only those it
/// parses or forwards (mediasoup also lists dependency-descriptor, abs-capture-time,
/// playout-delay and its packet-id, which ringsfu would drop anyway).
const EXTENSIONS: &[(MediaKind, &str, u8, ExtDirection)] = &[
    (MediaKind::Audio, uri::MID, 1, ExtDirection::SendRecv),
    (MediaKind::Video, uri::MID, 1, ExtDirection::SendRecv),
    (MediaKind::Video, uri::RID, 2, ExtDirection::RecvOnly),
    (MediaKind::Video, uri::RRID, 3, ExtDirection::RecvOnly),
    (MediaKind::Audio, uri::ABS_SEND_TIME, 4, ExtDirection::SendRecv),
    (MediaKind::Video, uri::ABS_SEND_TIME, 4, ExtDirection::SendRecv),
    // Audio TWCC is receive-only, as in mediasoup: publishers get feedback, consumers don't need it.
    (MediaKind::Audio, uri::TWCC, 5, ExtDirection::RecvOnly),
    (MediaKind::Video, uri::TWCC, 5, ExtDirection::SendRecv),
    (MediaKind::Audio, uri::AUDIO_LEVEL, 6, ExtDirection::SendRecv),
    (MediaKind::Video, uri::VIDEO_ORIENTATION, 8, ExtDirection::SendRecv),
];

/// mediasoup's dynamic payload type pool: 100..=127 first, then 96..=99.
fn dynamic_payload_types() -> impl Iterator<Item = u8> {
    (100..=127).chain(96..=99)
}

fn video_feedback() -> Vec<Feedback> {
    vec![
        Feedback::new("nack", ""),
        Feedback::new("nack", "pli"),
        Feedback::new("ccm", "fir"),
        Feedback::new("goog-remb", ""),
        Feedback::new("transport-cc", ""),
    ]
}

impl RouterCaps {
    pub fn new(audio: &[AudioCodec], video: &[VideoCodec]) -> RouterCaps {
        let mut pool = dynamic_payload_types();
        let mut codecs = Vec::new();
        for codec in audio {
            let (mime, clock_rate, channels, pt, feedback) = match codec {
                AudioCodec::Opus => (
                    Mime::Opus,
                    48_000,
                    2,
                    pool.next(),
                    vec![Feedback::new("nack", ""), Feedback::new("transport-cc", "")],
                ),
                AudioCodec::Pcmu => (Mime::Pcmu, 8_000, 1, Some(0), vec![Feedback::new("transport-cc", "")]),
                AudioCodec::Pcma => (Mime::Pcma, 8_000, 1, Some(8), vec![Feedback::new("transport-cc", "")]),
            };
            codecs.push(RouterCodec {
                mime,
                payload_type: pt.expect("the dynamic payload type pool holds 32 values"),
                clock_rate,
                channels: Some(channels),
                parameters: Map::new(),
                feedback,
                rtx_payload_type: None,
                apt: None,
            });
        }
        for codec in video {
            let h264 = |profile: &str| {
                let mut p = Map::new();
                p.insert("level-asymmetry-allowed".into(), json!(1));
                p.insert("packetization-mode".into(), json!(1));
                p.insert("profile-level-id".into(), json!(profile));
                p
            };
            let (mime, parameters) = match codec {
                VideoCodec::Vp8 => (Mime::Vp8, Map::new()),
                VideoCodec::Vp9 => {
                    let mut p = Map::new();
                    p.insert("profile-id".into(), json!(2));
                    (Mime::Vp9, p)
                }
                VideoCodec::H264 => (Mime::H264, h264("640028")),
                VideoCodec::H264ConstrainedBaseline => (Mime::H264, h264("42e00c")),
                VideoCodec::H264ConstrainedHigh => (Mime::H264, h264("640c0d")),
            };
            let pt = pool.next().expect("the dynamic payload type pool holds 32 values");
            let rtx = pool.next().expect("the dynamic payload type pool holds 32 values");
            codecs.push(RouterCodec {
                mime,
                payload_type: pt,
                clock_rate: 90_000,
                channels: None,
                parameters,
                feedback: video_feedback(),
                rtx_payload_type: Some(rtx),
                apt: None,
            });
            let mut apt = Map::new();
            apt.insert("apt".into(), json!(pt));
            codecs.push(RouterCodec {
                mime: Mime::Rtx,
                payload_type: rtx,
                clock_rate: 90_000,
                channels: None,
                parameters: apt,
                feedback: Vec::new(),
                rtx_payload_type: None,
                apt: Some(pt),
            });
        }
        let header_extensions: Vec<RouterExtension> =
            EXTENSIONS.iter().map(|&(kind, uri, id, direction)| RouterExtension { kind, uri, id, direction }).collect();
        let json = json!({
            "codecs": codecs.iter().map(RouterCodec::to_json).collect::<Vec<_>>(),
            "headerExtensions": header_extensions.iter().map(|e| json!({
                "kind": kind_str(e.kind),
                "uri": e.uri,
                "preferredId": e.id,
                "preferredEncrypt": false,
                "direction": match e.direction { ExtDirection::SendRecv => "sendrecv", ExtDirection::RecvOnly => "recvonly" },
            })).collect::<Vec<_>>(),
        });
        RouterCaps { codecs, header_extensions, json }
    }

    /// The JSON sent as `capabilities` in `INIT_TRANSPORTS`.
    pub fn to_json(&self) -> &Value {
        &self.json
    }

    pub fn codec_by_pt(&self, pt: u8) -> Option<&RouterCodec> {
        self.codecs.iter().find(|c| c.payload_type == pt)
    }

    /// The router codec a producer's media codec maps to (mediasoup's strict match).
    pub fn match_codec(
        &self,
        mime: Mime,
        clock_rate: u32,
        channels: Option<u8>,
        parameters: &Map<String, Value>,
    ) -> Option<&RouterCodec> {
        self.codecs.iter().find(|c| {
            c.mime == mime
                && c.mime != Mime::Rtx
                && codecs_match(c.mime, c.clock_rate, c.channels, &c.parameters, clock_rate, channels, parameters)
        })
    }

    /// Router header extension id for `uri` and `kind`.
    pub fn extension_id(&self, kind: MediaKind, uri: &str) -> Option<&RouterExtension> {
        self.header_extensions.iter().find(|e| e.kind == kind && e.uri == uri)
    }
}

/// mediasoup's strict codec match (same family assumed): clock rate, channels, and for H264 the
/// packetization mode and profile, for VP9 the profile id.
pub fn codecs_match(
    mime: Mime,
    a_clock: u32,
    a_channels: Option<u8>,
    a_params: &Map<String, Value>,
    b_clock: u32,
    b_channels: Option<u8>,
    b_params: &Map<String, Value>,
) -> bool {
    if a_clock != b_clock {
        return false;
    }
    if mime.kind() == MediaKind::Audio && mime != Mime::Rtx && a_channels.unwrap_or(1) != b_channels.unwrap_or(1) {
        return false;
    }
    match mime {
        Mime::H264 => {
            let mode = |p: &Map<String, Value>| param_u64(p, "packetization-mode").unwrap_or(0);
            if mode(a_params) != mode(b_params) {
                return false;
            }
            let profile = |p: &Map<String, Value>| {
                h264::profile(p.get("profile-level-id").and_then(Value::as_str).unwrap_or("42e01f"))
            };
            matches!((profile(a_params), profile(b_params)), (Some(a), Some(b)) if a == b)
        }
        Mime::Vp9 => param_u64(a_params, "profile-id").unwrap_or(0) == param_u64(b_params, "profile-id").unwrap_or(0),
        _ => true,
    }
}

/// A codec parameter as a number; SDP-derived values arrive as numbers or numeric strings.
pub fn param_u64(params: &Map<String, Value>, key: &str) -> Option<u64> {
    match params.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_types_follow_mediasoup_for_the_upstream_codec_list() {
        let caps = RouterCaps::new(&AudioCodec::ALL, &VideoCodec::ALL);
        let pts: Vec<(Mime, u8)> = caps.codecs.iter().map(|c| (c.mime, c.payload_type)).collect();
        assert_eq!(
            pts,
            vec![
                (Mime::Opus, 100),
                (Mime::Pcmu, 0),
                (Mime::Pcma, 8),
                (Mime::Vp8, 101),
                (Mime::Rtx, 102),
                (Mime::Vp9, 103),
                (Mime::Rtx, 104),
                (Mime::H264, 105),
                (Mime::Rtx, 106),
                (Mime::H264, 107),
                (Mime::Rtx, 108),
                (Mime::H264, 109),
                (Mime::Rtx, 110),
            ]
        );
        let json = caps.to_json();
        assert_eq!(json["codecs"][0]["mimeType"], "audio/opus");
        assert_eq!(json["codecs"][0]["channels"], 2);
        assert_eq!(json["codecs"][4]["parameters"]["apt"], 101);
        assert_eq!(json["headerExtensions"][0]["preferredId"], 1);
    }

    #[test]
    fn subsets_take_payload_types_from_the_pool_in_order() {
        let caps = RouterCaps::new(&[AudioCodec::Pcma], &[VideoCodec::H264ConstrainedBaseline]);
        let pts: Vec<u8> = caps.codecs.iter().map(|c| c.payload_type).collect();
        assert_eq!(pts, vec![8, 100, 101]);
    }

    #[test]
    fn h264_matches_by_profile_and_packetization_mode() {
        let caps = RouterCaps::new(&AudioCodec::ALL, &VideoCodec::ALL);
        let chrome_cb: Map<String, Value> = serde_json::from_value(
            json!({"level-asymmetry-allowed": 1, "packetization-mode": 1, "profile-level-id": "42e01f"}),
        )
        .unwrap();
        assert_eq!(caps.match_codec(Mime::H264, 90_000, None, &chrome_cb).unwrap().payload_type, 107);
        let mode0: Map<String, Value> =
            serde_json::from_value(json!({"packetization-mode": 0, "profile-level-id": "42e01f"})).unwrap();
        assert!(caps.match_codec(Mime::H264, 90_000, None, &mode0).is_none());
        let vp9_profile0 = Map::new();
        assert!(caps.match_codec(Mime::Vp9, 90_000, None, &vp9_profile0).is_none());
        assert!(caps.match_codec(Mime::Opus, 48_000, Some(2), &Map::new()).is_some());
        assert!(caps.match_codec(Mime::Opus, 48_000, Some(1), &Map::new()).is_none());
    }
}
