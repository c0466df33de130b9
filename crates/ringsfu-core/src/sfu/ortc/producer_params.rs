//! Producer `rtpParameters` as mediasoup-client sends them in `INIT_PRODUCER`: parsed once into a
//! validated value ("parse, don't validate"), with mediasoup-style error messages.
//!
//! They carry the *browser's* payload types and header extension ids; each media codec is mapped
//! to the router codec it matches.

use super::caps::{Mime, RouterCaps, param_u64, uri};
use serde_json::{Map, Value};
use smallvec::SmallVec;
use str0m::media::MediaKind;

/// Most encodings (simulcast layers) a producer may have.
pub const MAX_ENCODINGS: usize = 4;

#[derive(Debug, Clone)]
pub struct ProducerCodec {
    pub mime: Mime,
    pub payload_type: u8,
    pub rtx_payload_type: Option<u8>,
    pub router_payload_type: u8,
    pub router_rtx_payload_type: Option<u8>,
    pub clock_rate: u32,
    pub channels: Option<u8>,
    pub parameters: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
pub struct ProducerEncoding {
    pub ssrc: Option<u32>,
    pub rtx_ssrc: Option<u32>,
    pub rid: Option<String>,
    pub max_bitrate: Option<u64>,
    pub scalability_mode: Option<String>,
}

/// The browser's ids for the header extensions ringsfu reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtensionIds {
    pub mid: Option<u8>,
    pub rid: Option<u8>,
    pub rrid: Option<u8>,
    pub abs_send_time: Option<u8>,
    pub twcc: Option<u8>,
    pub audio_level: Option<u8>,
    pub video_orientation: Option<u8>,
}

#[derive(Debug, Clone)]
pub struct ProducerParams {
    pub kind: MediaKind,
    pub mid: Option<String>,
    /// Media codecs, in the producer's order; the first is the one browsers send.
    pub codecs: Vec<ProducerCodec>,
    pub encodings: SmallVec<[ProducerEncoding; MAX_ENCODINGS]>,
    pub extensions: ExtensionIds,
    pub cname: Option<String>,
    pub msid: Option<String>,
    /// Temporal layers per encoding, from `scalabilityMode` ("L1T3" → 3); 1 when absent.
    pub temporal_layers: u8,
}

impl ProducerParams {
    pub fn is_simulcast(&self) -> bool {
        self.encodings.len() > 1
    }

    /// The router payload type of a packet's payload type, and whether it is RTX.
    pub fn router_payload_type(&self, pt: u8) -> Option<u8> {
        self.codecs.iter().find(|c| c.payload_type == pt).map(|c| c.router_payload_type)
    }

    /// Highest `maxBitrate` over the encodings (mediasoup puts it in consumer parameters).
    pub fn max_bitrate(&self) -> Option<u64> {
        self.encodings.iter().filter_map(|e| e.max_bitrate).max()
    }

    /// `scalabilityMode` for consumers: `L<encodings>T<temporal layers>`.
    pub fn consumer_scalability_mode(&self) -> Option<String> {
        let has_mode = self.encodings.iter().any(|e| e.scalability_mode.is_some());
        if self.is_simulcast() {
            Some(format!("L{}T{}", self.encodings.len(), self.temporal_layers))
        } else if has_mode {
            self.encodings[0].scalability_mode.clone()
        } else {
            None
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn u8_value(v: &Value) -> Option<u8> {
    v.as_u64().and_then(|n| u8::try_from(n).ok())
}

fn u32_value(v: &Value) -> Option<u32> {
    v.as_u64().and_then(|n| u32::try_from(n).ok())
}

/// Parses and validates `rtpParameters` for a producer of `kind` against the router.
pub fn parse(kind: MediaKind, params: &Value, router: &RouterCaps) -> Result<ProducerParams> {
    let Value::Object(params) = params else {
        return Err("rtpParameters is not an object".into());
    };
    let mid = match params.get("mid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s))
            if s.len() <= 16 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Some(s.clone())
        }
        Some(Value::String(s)) => {
            return Err(format!("rtpParameters.mid {s:?} is longer than 16 characters or not alphanumeric"));
        }
        Some(_) => return Err("rtpParameters.mid is not a string".into()),
    };

    let codecs = parse_codecs(kind, params.get("codecs"), router)?;
    let extensions = parse_extensions(params.get("headerExtensions"))?;
    let (encodings, temporal_layers) = parse_encodings(kind, params.get("encodings"), &codecs[0])?;

    let has_ssrcs = encodings.iter().all(|e| e.ssrc.is_some());
    if !has_ssrcs {
        if encodings.iter().any(|e| e.rid.is_some()) {
            if extensions.rid.is_none() {
                return Err("encodings use rid but the rtp-stream-id header extension is missing".into());
            }
        } else if mid.is_none() || extensions.mid.is_none() {
            return Err("an encoding without ssrc or rid needs rtpParameters.mid and the mid header extension".into());
        }
    }

    let rtcp = match params.get("rtcp") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err("rtpParameters.rtcp is not an object".into()),
    };
    let cname = match rtcp.get("cname") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("invalid rtcp.cname".into()),
    };
    let msid = match params.get("msid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("rtpParameters.msid is not a string".into()),
    };

    Ok(ProducerParams { kind, mid, codecs, encodings, extensions, cname, msid, temporal_layers })
}

fn parse_codecs(kind: MediaKind, codecs: Option<&Value>, router: &RouterCaps) -> Result<Vec<ProducerCodec>> {
    let Some(Value::Array(codecs)) = codecs else {
        return Err("missing rtpParameters.codecs".into());
    };
    if codecs.is_empty() {
        return Err("empty rtpParameters.codecs".into());
    }
    struct Raw<'a> {
        mime: Mime,
        mime_type: &'a str,
        pt: u8,
        clock_rate: u32,
        channels: Option<u8>,
        parameters: Map<String, Value>,
    }
    let mut raw = Vec::with_capacity(codecs.len());
    for codec in codecs {
        let Value::Object(c) = codec else {
            return Err("codec is not an object".into());
        };
        let Some(mime_type) = c.get("mimeType").and_then(Value::as_str) else {
            return Err("missing codec.mimeType".into());
        };
        let Some((family, _)) = mime_type.split_once('/') else {
            return Err(format!("invalid codec.mimeType {mime_type:?}"));
        };
        let Some(pt) = c.get("payloadType").and_then(u8_value).filter(|pt| *pt <= 127) else {
            return Err(format!("missing or invalid codec.payloadType for {mime_type}"));
        };
        if (64..=95).contains(&pt) {
            return Err(format!("payloadType {pt} of {mime_type} collides with RTCP packet types (64-95)"));
        }
        let Some(clock_rate) = c.get("clockRate").and_then(u32_value).filter(|r| *r > 0) else {
            return Err(format!("missing codec.clockRate for {mime_type}"));
        };
        let family_kind = match family.to_ascii_lowercase().as_str() {
            "audio" => MediaKind::Audio,
            "video" => MediaKind::Video,
            _ => return Err(format!("invalid codec.mimeType {mime_type:?}")),
        };
        if family_kind != kind {
            return Err(format!("codec {mime_type} does not match producer kind {}", super::caps::kind_str(kind)));
        }
        let Some(mime) = Mime::parse(mime_type) else {
            return Err(format!("unsupported codec [mimeType:{mime_type}, payloadType:{pt}]"));
        };
        let channels = match c.get("channels") {
            None | Some(Value::Null) => None,
            Some(v) => Some(u8_value(v).ok_or_else(|| format!("invalid codec.channels for {mime_type}"))?),
        };
        let parameters = match c.get("parameters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => {
                for (key, value) in p {
                    if !(value.is_string() || value.is_number()) {
                        return Err(format!("invalid codec parameter [key:{key}, value:{value}]"));
                    }
                }
                p.clone()
            }
            Some(_) => return Err(format!("invalid codec.parameters for {mime_type}")),
        };
        if raw.iter().any(|r: &Raw| r.pt == pt) {
            return Err(format!("duplicated payloadType {pt}"));
        }
        raw.push(Raw { mime, mime_type, pt, clock_rate, channels, parameters });
    }

    let mut out: Vec<ProducerCodec> = Vec::new();
    for r in raw.iter().filter(|r| r.mime != Mime::Rtx) {
        let Some(router_codec) = router.match_codec(r.mime, r.clock_rate, r.channels, &r.parameters) else {
            return Err(format!("unsupported codec [mimeType:{}, payloadType:{}]", r.mime_type, r.pt));
        };
        out.push(ProducerCodec {
            mime: r.mime,
            payload_type: r.pt,
            rtx_payload_type: None,
            router_payload_type: router_codec.payload_type,
            router_rtx_payload_type: None,
            clock_rate: r.clock_rate,
            channels: r.channels,
            parameters: r.parameters.clone(),
        });
    }
    if out.is_empty() {
        return Err("no media codecs found".into());
    }
    for r in raw.iter().filter(|r| r.mime == Mime::Rtx) {
        let Some(apt) = param_u64(&r.parameters, "apt").and_then(|a| u8::try_from(a).ok()) else {
            return Err(format!("missing apt parameter in RTX codec {}", r.pt));
        };
        let Some(media) = out.iter_mut().find(|c| c.payload_type == apt) else {
            return Err(format!("missing media codec found for RTX PT {}", r.pt));
        };
        let router_rtx = router
            .codec_by_pt(media.router_payload_type)
            .and_then(|c| c.rtx_payload_type)
            .ok_or_else(|| format!("no RTX codec for capability codec PT {}", media.router_payload_type))?;
        media.rtx_payload_type = Some(r.pt);
        media.router_rtx_payload_type = Some(router_rtx);
    }
    Ok(out)
}

fn parse_extensions(exts: Option<&Value>) -> Result<ExtensionIds> {
    let mut ids = ExtensionIds::default();
    let list = match exts {
        None | Some(Value::Null) => return Ok(ids),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("rtpParameters.headerExtensions is not an array".into()),
    };
    let mut seen: SmallVec<[u8; 16]> = SmallVec::new();
    for ext in list {
        let Value::Object(e) = ext else {
            return Err("header extension is not an object".into());
        };
        let Some(ext_uri) = e.get("uri").and_then(Value::as_str) else {
            return Err("missing ext.uri".into());
        };
        let Some(id) = e.get("id").and_then(u8_value) else {
            return Err(format!("missing or invalid ext.id for {ext_uri}"));
        };
        if id == 0 {
            return Err(format!("RTP extension id cannot be 0 ({ext_uri})"));
        }
        if seen.contains(&id) {
            return Err(format!("duplicated header extension id {id}"));
        }
        seen.push(id);
        let slot = match ext_uri {
            uri::MID => &mut ids.mid,
            uri::RID => &mut ids.rid,
            uri::RRID => &mut ids.rrid,
            uri::ABS_SEND_TIME => &mut ids.abs_send_time,
            uri::TWCC => &mut ids.twcc,
            uri::AUDIO_LEVEL => &mut ids.audio_level,
            uri::VIDEO_ORIENTATION => &mut ids.video_orientation,
            // Extensions ringsfu does not read are tolerated, whatever their id: browsers list
            // some they never send (abs-capture-time, dependency descriptor).
            _ => continue,
        };
        if id > 14 {
            return Err(format!("header extension id {id} for {ext_uri} is out of range (1-14)"));
        }
        *slot = Some(id);
    }
    Ok(ids)
}

fn parse_encodings(
    kind: MediaKind,
    encodings: Option<&Value>,
    codec: &ProducerCodec,
) -> Result<(SmallVec<[ProducerEncoding; MAX_ENCODINGS]>, u8)> {
    let list: &[Value] = match encodings {
        None | Some(Value::Null) => &[],
        Some(Value::Array(list)) => list,
        Some(_) => return Err("rtpParameters.encodings is not an array".into()),
    };
    if list.len() > MAX_ENCODINGS {
        return Err(format!("too many encodings ({}; at most {MAX_ENCODINGS})", list.len()));
    }
    let mut out: SmallVec<[ProducerEncoding; MAX_ENCODINGS]> = SmallVec::new();
    let mut temporal_layers = 1u8;
    for enc in list {
        let Value::Object(e) = enc else {
            return Err("encoding is not an object".into());
        };
        let ssrc = match e.get("ssrc") {
            None | Some(Value::Null) => None,
            Some(v) => Some(u32_value(v).filter(|s| *s != 0).ok_or("invalid encoding.ssrc")?),
        };
        let rid = match e.get("rid") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 8 && s.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                Some(s.clone())
            }
            Some(_) => return Err("invalid encoding.rid (1-8 alphanumeric characters)".into()),
        };
        let rtx_ssrc = match e.get("rtx") {
            None | Some(Value::Null) => None,
            Some(Value::Object(rtx)) => {
                Some(rtx.get("ssrc").and_then(u32_value).filter(|s| *s != 0).ok_or("missing encoding.rtx.ssrc")?)
            }
            Some(_) => return Err("invalid encoding.rtx".into()),
        };
        let max_bitrate = e.get("maxBitrate").and_then(Value::as_u64);
        let scalability_mode = match e.get("scalabilityMode") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                let Some(t) = temporal_layers_of(s) else {
                    return Err(format!("invalid encoding.scalabilityMode {s:?}"));
                };
                temporal_layers = temporal_layers.max(t);
                Some(s.clone())
            }
            Some(_) => return Err("invalid encoding.scalabilityMode".into()),
        };
        out.push(ProducerEncoding { ssrc, rtx_ssrc, rid, max_bitrate, scalability_mode });
    }
    if out.is_empty() {
        out.push(ProducerEncoding::default());
    }
    if out.len() > 1 {
        if kind == MediaKind::Audio {
            return Err("audio producers cannot have several encodings".into());
        }
        if !codec.mime.supports_simulcast() {
            return Err(format!("{} codec not supported for simulcast", codec.mime.name()));
        }
        let all_rid = out.iter().all(|e| e.rid.is_some());
        let all_ssrc = out.iter().all(|e| e.ssrc.is_some());
        if !all_rid && !all_ssrc {
            return Err("wrong entry in encodings (every simulcast encoding needs a rid, or every one an ssrc)".into());
        }
    }
    for (i, a) in out.iter().enumerate() {
        for b in &out[i + 1..] {
            if a.rid.is_some() && a.rid == b.rid {
                return Err(format!("duplicated encoding rid {:?}", a.rid.as_deref().unwrap_or_default()));
            }
            let ssrcs_a = [a.ssrc, a.rtx_ssrc];
            if [b.ssrc, b.rtx_ssrc].iter().flatten().any(|s| ssrcs_a.contains(&Some(*s))) {
                return Err("duplicated ssrc in encodings".into());
            }
        }
        if a.ssrc.is_some() && a.ssrc == a.rtx_ssrc {
            return Err("encoding.rtx.ssrc equals encoding.ssrc".into());
        }
    }
    Ok((out, temporal_layers))
}

/// `L<s>T<t>` or `S<s>T<t>` (optionally with a `_KEY`/`h` suffix) → t.
fn temporal_layers_of(mode: &str) -> Option<u8> {
    let rest = mode.strip_prefix('L').or_else(|| mode.strip_prefix('S'))?;
    let (spatial, rest) = rest.split_once('T')?;
    let spatial: u8 = spatial.parse().ok()?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let temporal: u8 = digits.parse().ok()?;
    ((1..=3).contains(&spatial) && (1..=3).contains(&temporal)).then_some(temporal)
}

/// Parameters as browsers send them, shared by the unit tests of this module and its neighbours.
#[cfg(test)]
pub mod tests_support {
    use serde_json::{Value, json};

    /// What mediasoup-client 3.18 sends for Odoo's camera (observed in Chromium).
    pub fn chrome_simulcast_vp8() -> Value {
        json!({
            "mid": "1",
            "codecs": [
                {"mimeType":"video/VP8","payloadType":96,"clockRate":90000,"parameters":{},"rtcpFeedback":[{"type":"nack","parameter":""}]},
                {"mimeType":"video/rtx","payloadType":97,"clockRate":90000,"parameters":{"apt":96},"rtcpFeedback":[]}
            ],
            "headerExtensions": [
                {"uri":"urn:ietf:params:rtp-hdrext:sdes:mid","id":4,"encrypt":false,"parameters":{}},
                {"uri":"urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id","id":10,"encrypt":false,"parameters":{}},
                {"uri":"urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id","id":11,"encrypt":false,"parameters":{}},
                {"uri":"http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01","id":3,"encrypt":false,"parameters":{}},
                {"uri":"http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time","id":15,"encrypt":false,"parameters":{}}
            ],
            "encodings": [
                {"active":true,"scaleResolutionDownBy":4,"maxBitrate":1000000,"rid":"r0","scalabilityMode":"L1T3","dtx":false},
                {"active":true,"scaleResolutionDownBy":2,"maxBitrate":2000000,"rid":"r1","scalabilityMode":"L1T3","dtx":false},
                {"active":true,"scaleResolutionDownBy":1,"maxBitrate":4000000,"rid":"r2","scalabilityMode":"L1T3","dtx":false}
            ],
            "rtcp": {"cname":"","reducedSize":true},
            "msid": "stream track"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::chrome_simulcast_vp8;
    use super::*;
    use crate::sfu::codecs::{AudioCodec, VideoCodec};
    use serde_json::json;

    fn router() -> RouterCaps {
        RouterCaps::new(&AudioCodec::ALL, &VideoCodec::ALL)
    }

    #[test]
    fn browser_simulcast_parameters_parse() {
        let p = parse(MediaKind::Video, &chrome_simulcast_vp8(), &router()).unwrap();
        assert_eq!(p.codecs.len(), 1);
        let c = &p.codecs[0];
        assert_eq!((c.payload_type, c.rtx_payload_type), (96, Some(97)));
        assert_eq!((c.router_payload_type, c.router_rtx_payload_type), (101, Some(102)));
        assert_eq!(p.encodings.len(), 3);
        assert_eq!(p.encodings[0].rid.as_deref(), Some("r0"));
        assert_eq!(p.extensions.rid, Some(10));
        assert_eq!(p.extensions.twcc, Some(3));
        assert_eq!(p.temporal_layers, 3);
        assert_eq!(p.consumer_scalability_mode().as_deref(), Some("L3T3"));
        assert_eq!(p.max_bitrate(), Some(4_000_000));
        assert_eq!(p.cname, None);
    }

    /// Each row: a mutation of valid parameters and a fragment of the expected error.
    #[test]
    fn invalid_parameters_are_refused_with_a_clear_error() {
        type Mutation = Box<dyn Fn(&mut Value)>;
        let rows: Vec<(Mutation, &str)> = vec![
            (Box::new(|p| *p = json!("nope")), "not an object"),
            (Box::new(|p| p["codecs"] = json!([])), "empty rtpParameters.codecs"),
            (
                Box::new(|p| p.as_object_mut().unwrap().remove("codecs").map(|_| ()).unwrap()),
                "missing rtpParameters.codecs",
            ),
            (Box::new(|p| p["codecs"][0]["mimeType"] = json!("video/AV2")), "unsupported codec [mimeType:video/AV2"),
            (Box::new(|p| p["codecs"][0]["mimeType"] = json!("audio/opus")), "does not match producer kind"),
            (Box::new(|p| p["codecs"][0]["payloadType"] = json!(72)), "collides with RTCP"),
            (Box::new(|p| p["codecs"][0]["payloadType"] = json!(300)), "payloadType"),
            (Box::new(|p| p["codecs"][1]["parameters"]["apt"] = json!(55)), "missing media codec found for RTX PT 97"),
            (Box::new(|p| p["codecs"][0]["parameters"] = json!({"x": [1]})), "invalid codec parameter"),
            (Box::new(|p| p["headerExtensions"][1]["id"] = json!(4)), "duplicated header extension id 4"),
            (Box::new(|p| p["headerExtensions"][1]["id"] = json!(0)), "cannot be 0"),
            (Box::new(|p| p["headerExtensions"][1]["id"] = json!(20)), "out of range"),
            (Box::new(|p| p["encodings"][1]["rid"] = json!("r0")), "duplicated encoding rid"),
            (Box::new(|p| p["encodings"][1]["rid"] = json!(7)), "invalid encoding.rid"),
            (Box::new(|p| p["encodings"][2]["scalabilityMode"] = json!("X9")), "scalabilityMode"),
            (
                Box::new(|p| p["encodings"][0].as_object_mut().unwrap().remove("rid").map(|_| ()).unwrap()),
                "every simulcast encoding needs a rid",
            ),
            (Box::new(|p| p["headerExtensions"] = json!([])), "rtp-stream-id header extension is missing"),
            (Box::new(|p| p["rtcp"] = json!(3)), "rtcp is not an object"),
            (Box::new(|p| p["mid"] = json!(1)), "mid is not a string"),
            (Box::new(|p| p["encodings"] = json!([{"ssrc": 5}, {"ssrc": 5}])), "duplicated ssrc"),
        ];
        for (mutate, expected) in rows {
            let mut p = chrome_simulcast_vp8();
            mutate(&mut p);
            let err = parse(MediaKind::Video, &p, &router()).unwrap_err();
            assert!(err.contains(expected), "{err:?} should contain {expected:?}");
        }
    }

    #[test]
    fn vp9_simulcast_is_refused_like_mediasoup() {
        let mut p = chrome_simulcast_vp8();
        p["codecs"] = json!([
            {"mimeType":"video/VP9","payloadType":98,"clockRate":90000,"parameters":{"profile-id":2}}
        ]);
        let err = parse(MediaKind::Video, &p, &router()).unwrap_err();
        assert_eq!(err, "video/VP9 codec not supported for simulcast");
    }

    #[test]
    fn audio_with_an_ssrc_needs_no_mid() {
        let p = json!({
            "codecs": [{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2}],
            "encodings": [{"ssrc": 1234567}]
        });
        let parsed = parse(MediaKind::Audio, &p, &router()).unwrap();
        assert_eq!(parsed.encodings[0].ssrc, Some(1234567));
        assert_eq!(parsed.router_payload_type(111), Some(100));
        assert_eq!(parsed.router_payload_type(96), None);
        let no_ssrc = json!({"codecs": [{"mimeType":"audio/opus","payloadType":111,"clockRate":48000,"channels":2}]});
        assert!(parse(MediaKind::Audio, &no_ssrc, &router()).unwrap_err().contains("needs rtpParameters.mid"));
    }
}
