//! A subscriber's device capabilities (the `INIT_TRANSPORTS` reply) and the consumer
//! `rtpParameters` derived from them, following mediasoup's `getConsumerRtpParameters`.

use super::caps::{ExtDirection, Feedback, Mime, RouterCaps, codecs_match, uri};
use super::producer_params::ProducerParams;
use serde_json::{Map, Value, json};
use str0m::media::MediaKind;

/// A codec the subscriber's device can receive (router payload types, as mediasoup-client
/// reports them).
#[derive(Debug, Clone)]
pub struct DeviceCodec {
    pub mime: Option<Mime>,
    pub payload_type: u8,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    pub parameters: Map<String, Value>,
    pub feedback: Vec<Feedback>,
    pub apt: Option<u8>,
}

/// `device.rtpCapabilities` as sent by mediasoup-client.
#[derive(Debug, Clone, Default)]
pub struct DeviceCaps {
    pub codecs: Vec<DeviceCodec>,
    /// (uri, id) pairs; kind is deliberately not kept (mediasoup-client mislabels kinds).
    pub header_extensions: Vec<(String, u8)>,
}

impl DeviceCaps {
    /// Parses the capabilities; `None` when they are not valid RtpCapabilities, in which case
    /// (as upstream) the session can consume nothing but stays connected.
    pub fn parse(value: &Value) -> Option<DeviceCaps> {
        let obj = value.as_object()?;
        let mut caps = DeviceCaps::default();
        if let Some(codecs) = obj.get("codecs") {
            for c in codecs.as_array()? {
                let c = c.as_object()?;
                let mime_type = c.get("mimeType")?.as_str()?;
                let payload_type = u8::try_from(c.get("preferredPayloadType")?.as_u64()?).ok()?;
                let clock_rate = u32::try_from(c.get("clockRate")?.as_u64()?).ok()?;
                let channels = c.get("channels").and_then(Value::as_u64).and_then(|v| u8::try_from(v).ok());
                let parameters = c.get("parameters").and_then(Value::as_object).cloned().unwrap_or_default();
                let apt = super::caps::param_u64(&parameters, "apt").and_then(|v| u8::try_from(v).ok());
                let feedback = c
                    .get("rtcpFeedback")
                    .and_then(Value::as_array)
                    .map(|list| {
                        list.iter()
                            .filter_map(|fb| {
                                let kind = fb.get("type")?.as_str()?;
                                let parameter = fb.get("parameter").and_then(Value::as_str).unwrap_or("");
                                Some(Feedback { kind: kind.into(), parameter: parameter.into() })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                caps.codecs.push(DeviceCodec {
                    mime: Mime::parse(mime_type),
                    payload_type,
                    clock_rate,
                    channels,
                    parameters,
                    feedback,
                    apt,
                });
            }
        }
        if let Some(exts) = obj.get("headerExtensions") {
            for e in exts.as_array()? {
                let uri = e.get("uri")?.as_str()?;
                let id = u8::try_from(e.get("preferredId")?.as_u64()?).ok()?;
                caps.header_extensions.push((uri.to_string(), id));
            }
        }
        Some(caps)
    }

    fn has_extension(&self, uri: &str, id: u8) -> bool {
        self.header_extensions.iter().any(|(u, i)| u == uri && *i == id)
    }
}

/// What a consumer of one producer sends, derived for one subscriber.
#[derive(Debug, Clone)]
pub struct ConsumerParams {
    /// Router payload types the subscriber accepts, main codec first, with their RTX.
    pub codecs: Vec<(u8, Option<u8>)>,
    pub rtx: bool,
    /// Router ids of the extensions written to this subscriber.
    pub extensions: ConsumerExtensions,
    pub json: Value,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerExtensions {
    pub mid: bool,
    pub abs_send_time: bool,
    pub twcc: bool,
    pub audio_level: bool,
    pub video_orientation: bool,
}

/// The identity of one consumer, chosen by the server.
pub struct ConsumerIdentity<'a> {
    pub mid: &'a str,
    pub ssrc: u32,
    pub rtx_ssrc: u32,
    pub cname: &'a str,
}

/// mediasoup's consumer parameters, or `None` when the device can receive none of the codecs.
pub fn derive(
    router: &RouterCaps,
    producer: &ProducerParams,
    device: &DeviceCaps,
    who: ConsumerIdentity<'_>,
) -> Option<ConsumerParams> {
    let kind = producer.kind;
    // RTX for video only, as mediasoup's default `enableRtx`.
    let enable_rtx = kind == MediaKind::Video;

    struct Chosen<'a> {
        producer_codec: &'a super::producer_params::ProducerCodec,
        feedback: Vec<Feedback>,
        rtx_pt: Option<u8>,
    }
    let mut chosen = Vec::new();
    for pc in &producer.codecs {
        let router_codec = router.codec_by_pt(pc.router_payload_type)?;
        let Some(device_codec) = device.codecs.iter().find(|d| {
            d.mime == Some(pc.mime)
                && codecs_match(
                    pc.mime,
                    d.clock_rate,
                    d.channels,
                    &d.parameters,
                    pc.clock_rate,
                    pc.channels,
                    &pc.parameters,
                )
        }) else {
            continue;
        };
        let feedback: Vec<Feedback> = device_codec
            .feedback
            .iter()
            .filter(|fb| router_codec.feedback.contains(fb))
            .filter(|fb| enable_rtx || !(fb.kind == "nack" && fb.parameter.is_empty()))
            .cloned()
            .collect();
        let rtx_pt = pc.router_rtx_payload_type.filter(|rtx| {
            enable_rtx && device.codecs.iter().any(|d| d.mime == Some(Mime::Rtx) && d.payload_type == *rtx)
        });
        chosen.push(Chosen { producer_codec: pc, feedback, rtx_pt });
    }
    if chosen.is_empty() {
        return None;
    }

    let exts: Vec<_> = router
        .header_extensions
        .iter()
        .filter(|e| e.kind == kind && e.direction == ExtDirection::SendRecv && device.has_extension(e.uri, e.id))
        .collect();
    let has = |u: &str| exts.iter().any(|e| e.uri == u);
    let extensions = ConsumerExtensions {
        mid: has(uri::MID),
        abs_send_time: has(uri::ABS_SEND_TIME),
        twcc: has(uri::TWCC),
        audio_level: has(uri::AUDIO_LEVEL),
        video_orientation: has(uri::VIDEO_ORIENTATION),
    };
    // One congestion-control feedback, as mediasoup: TWCC beats REMB, REMB needs abs-send-time.
    for c in &mut chosen {
        c.feedback.retain(|fb| match fb.kind.as_str() {
            "goog-remb" => !extensions.twcc && extensions.abs_send_time,
            "transport-cc" => extensions.twcc,
            _ => true,
        });
    }

    let rtx = chosen.iter().any(|c| c.rtx_pt.is_some());
    let mut codecs_json = Vec::new();
    for c in &chosen {
        let pc = c.producer_codec;
        let mut codec = Map::new();
        codec.insert("mimeType".into(), json!(pc.mime.name()));
        codec.insert("payloadType".into(), json!(pc.router_payload_type));
        codec.insert("clockRate".into(), json!(pc.clock_rate));
        if kind == MediaKind::Audio {
            codec.insert("channels".into(), json!(pc.channels.unwrap_or(1)));
        }
        codec.insert("parameters".into(), Value::Object(pc.parameters.clone()));
        codec.insert("rtcpFeedback".into(), Value::Array(c.feedback.iter().map(Feedback::to_json).collect()));
        codecs_json.push(Value::Object(codec));
        if let Some(rtx_pt) = c.rtx_pt {
            codecs_json.push(json!({
                "mimeType": "video/rtx",
                "payloadType": rtx_pt,
                "clockRate": pc.clock_rate,
                "parameters": {"apt": pc.router_payload_type},
                "rtcpFeedback": [],
            }));
        }
    }

    let mut encoding = Map::new();
    encoding.insert("ssrc".into(), json!(who.ssrc));
    if rtx {
        encoding.insert("rtx".into(), json!({"ssrc": who.rtx_ssrc}));
    }
    if let Some(mode) = producer.consumer_scalability_mode() {
        encoding.insert("scalabilityMode".into(), json!(mode));
    }
    if let Some(max) = producer.max_bitrate() {
        encoding.insert("maxBitrate".into(), json!(max));
    }

    let mut params = Map::new();
    params.insert("codecs".into(), Value::Array(codecs_json));
    params.insert(
        "headerExtensions".into(),
        Value::Array(
            exts.iter().map(|e| json!({"uri": e.uri, "id": e.id, "encrypt": false, "parameters": {}})).collect(),
        ),
    );
    params.insert("encodings".into(), json!([Value::Object(encoding)]));
    params.insert("rtcp".into(), json!({"cname": who.cname, "reducedSize": true}));
    if let Some(msid) = &producer.msid {
        params.insert("msid".into(), json!(msid));
    }
    params.insert("mid".into(), json!(who.mid));

    Some(ConsumerParams {
        codecs: chosen.iter().map(|c| (c.producer_codec.router_payload_type, c.rtx_pt)).collect(),
        rtx,
        extensions,
        json: Value::Object(params),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sfu::codecs::{AudioCodec, VideoCodec};
    use crate::sfu::ortc::producer_params;

    /// Device capabilities as mediasoup-client 3.18 in Chromium reports them (kinds mislabelled:
    /// mid/abs-send-time/transport-cc appear only as video).
    fn chrome_device() -> Value {
        json!({
            "codecs": [
                {"mimeType":"audio/opus","kind":"audio","preferredPayloadType":100,"clockRate":48000,"channels":2,
                 "parameters":{"minptime":10,"useinbandfec":1},"rtcpFeedback":[{"type":"transport-cc","parameter":""},{"type":"nack","parameter":""}]},
                {"mimeType":"video/VP8","kind":"video","preferredPayloadType":101,"clockRate":90000,"parameters":{},
                 "rtcpFeedback":[{"type":"goog-remb","parameter":""},{"type":"transport-cc","parameter":""},{"type":"ccm","parameter":"fir"},{"type":"nack","parameter":""},{"type":"nack","parameter":"pli"}]},
                {"mimeType":"video/rtx","kind":"video","preferredPayloadType":102,"clockRate":90000,"parameters":{"apt":101},"rtcpFeedback":[]}
            ],
            "headerExtensions": [
                {"kind":"video","uri":"urn:ietf:params:rtp-hdrext:sdes:mid","preferredId":1,"preferredEncrypt":false,"direction":"sendrecv"},
                {"kind":"video","uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time","preferredId":4,"preferredEncrypt":false,"direction":"sendrecv"},
                {"kind":"video","uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01","preferredId":5,"preferredEncrypt":false,"direction":"sendrecv"},
                {"kind":"audio","uri":"urn:ietf:params:rtp-hdrext:ssrc-audio-level","preferredId":6,"preferredEncrypt":false,"direction":"sendrecv"},
                {"kind":"video","uri":"urn:3gpp:video-orientation","preferredId":8,"preferredEncrypt":false,"direction":"sendrecv"}
            ]
        })
    }

    fn router() -> RouterCaps {
        RouterCaps::new(&AudioCodec::ALL, &VideoCodec::ALL)
    }

    fn who() -> ConsumerIdentity<'static> {
        ConsumerIdentity { mid: "1", ssrc: 1000, rtx_ssrc: 1001, cname: "abc" }
    }

    #[test]
    fn simulcast_vp8_consumer_matches_mediasoup() {
        let producer = producer_params::parse(
            MediaKind::Video,
            &producer_params::tests_support::chrome_simulcast_vp8(),
            &router(),
        )
        .unwrap();
        let device = DeviceCaps::parse(&chrome_device()).unwrap();
        let c = derive(&router(), &producer, &device, who()).unwrap();
        assert_eq!(c.codecs, vec![(101, Some(102))]);
        assert!(c.extensions.twcc && c.extensions.mid && c.extensions.video_orientation);
        assert!(!c.extensions.audio_level);
        let j = &c.json;
        assert_eq!(j["mid"], "1");
        assert_eq!(j["codecs"][0]["payloadType"], 101);
        assert_eq!(j["codecs"][1]["parameters"]["apt"], 101);
        // TWCC present, so goog-remb is dropped; the device's order is kept.
        let fb: Vec<&str> =
            j["codecs"][0]["rtcpFeedback"].as_array().unwrap().iter().map(|f| f["type"].as_str().unwrap()).collect();
        assert_eq!(fb, vec!["transport-cc", "ccm", "nack", "nack"]);
        assert_eq!(
            j["encodings"],
            json!([{"ssrc": 1000, "rtx": {"ssrc": 1001}, "scalabilityMode": "L3T3", "maxBitrate": 4000000}])
        );
        assert_eq!(j["rtcp"], json!({"cname": "abc", "reducedSize": true}));
        let uris: Vec<&str> =
            j["headerExtensions"].as_array().unwrap().iter().map(|e| e["uri"].as_str().unwrap()).collect();
        assert_eq!(uris, vec![uri::MID, uri::ABS_SEND_TIME, uri::TWCC, uri::VIDEO_ORIENTATION]);
    }

    #[test]
    fn opus_consumer_has_no_rtx_no_nack_and_no_twcc() {
        let params = json!({
            "mid": "0",
            "codecs": [{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2,"parameters":{"minptime":10,"useinbandfec":1}}],
            "encodings": [{"ssrc": 42}],
            "headerExtensions": [{"uri": uri::AUDIO_LEVEL, "id": 1}]
        });
        let producer = producer_params::parse(MediaKind::Audio, &params, &router()).unwrap();
        let device = DeviceCaps::parse(&chrome_device()).unwrap();
        let c = derive(&router(), &producer, &device, who()).unwrap();
        assert_eq!(c.codecs, vec![(100, None)]);
        assert!(!c.rtx);
        assert_eq!(c.json["codecs"][0]["rtcpFeedback"], json!([]));
        assert_eq!(c.json["codecs"][0]["channels"], 2);
        assert_eq!(c.json["encodings"], json!([{"ssrc": 1000}]));
        // Audio TWCC is receive-only on the router; mid and abs-send-time match by (uri, id).
        let uris: Vec<&str> =
            c.json["headerExtensions"].as_array().unwrap().iter().map(|e| e["uri"].as_str().unwrap()).collect();
        assert_eq!(uris, vec![uri::MID, uri::ABS_SEND_TIME, uri::AUDIO_LEVEL]);
    }

    #[test]
    fn devices_without_the_codec_cannot_consume_and_invalid_caps_are_none() {
        let producer = producer_params::parse(
            MediaKind::Video,
            &producer_params::tests_support::chrome_simulcast_vp8(),
            &router(),
        )
        .unwrap();
        let mut device = chrome_device();
        device["codecs"].as_array_mut().unwrap().retain(|c| c["mimeType"] == "audio/opus");
        let device = DeviceCaps::parse(&device).unwrap();
        assert!(derive(&router(), &producer, &device, who()).is_none());
        assert!(DeviceCaps::parse(&json!("nope")).is_none());
        assert!(DeviceCaps::parse(&json!({"codecs": [{"mimeType": "audio/opus"}]})).is_none());
    }
}
