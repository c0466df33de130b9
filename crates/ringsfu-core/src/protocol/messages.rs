//! Message names and payloads of the bus, parsed into typed values at the boundary.

use super::SessionId;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Names on the wire.
pub mod name {
    // Server → client requests.
    pub const INIT_TRANSPORTS: &str = "INIT_TRANSPORTS";
    pub const INIT_CONSUMER: &str = "INIT_CONSUMER";
    pub const PING: &str = "PING";
    // Server → client messages.
    pub const BROADCAST: &str = "BROADCAST";
    pub const SESSION_LEAVE: &str = "SESSION_LEAVE";
    pub const S_INFO_CHANGE: &str = "S_INFO_CHANGE";
    // Client → server requests.
    pub const CONNECT_CTS_TRANSPORT: &str = "CONNECT_CTS_TRANSPORT";
    pub const CONNECT_STC_TRANSPORT: &str = "CONNECT_STC_TRANSPORT";
    pub const INIT_PRODUCER: &str = "INIT_PRODUCER";
    // Client → server messages.
    pub const C_INFO_CHANGE: &str = "C_INFO_CHANGE";
    pub const PRODUCTION_CHANGE: &str = "PRODUCTION_CHANGE";
    pub const CONSUMPTION_CHANGE: &str = "CONSUMPTION_CHANGE";
}

/// What a producer carries: `type` in the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediaType {
    Audio,
    Camera,
    Screen,
}

impl MediaType {
    pub const ALL: [MediaType; 3] = [MediaType::Audio, MediaType::Camera, MediaType::Screen];

    pub fn parse(s: &str) -> Option<MediaType> {
        match s {
            "audio" => Some(MediaType::Audio),
            "camera" => Some(MediaType::Camera),
            "screen" => Some(MediaType::Screen),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MediaType::Audio => "audio",
            MediaType::Camera => "camera",
            MediaType::Screen => "screen",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn is_video(self) -> bool {
        self != MediaType::Audio
    }
}

/// A session's self-reported state. Unset fields are omitted on the wire (an untouched session
/// serializes as `{}`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_raising_hand: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_self_muted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_talking: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_deaf: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_camera_on: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_screen_sharing_on: Option<bool>,
}

impl SessionInfo {
    /// Applies the known keys of `update`, coerced to booleans as JavaScript's `Boolean()` does;
    /// other keys are ignored.
    pub fn apply(&mut self, update: &Map<String, Value>) {
        for (key, value) in update {
            let slot = match key.as_str() {
                "isRaisingHand" => &mut self.is_raising_hand,
                "isSelfMuted" => &mut self.is_self_muted,
                "isTalking" => &mut self.is_talking,
                "isDeaf" => &mut self.is_deaf,
                "isCameraOn" => &mut self.is_camera_on,
                "isScreenSharingOn" => &mut self.is_screen_sharing_on,
                _ => continue,
            };
            *slot = Some(truthy(value));
        }
    }

    pub fn to_value(self) -> Value {
        serde_json::to_value(self).expect("SessionInfo always serializes")
    }
}

/// JavaScript truthiness of a JSON value.
pub fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// The two transports of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server: what the session publishes.
    Cts,
    /// Server to client: what the session receives.
    Stc,
}

/// DTLS role a peer declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtlsRole {
    Auto,
    Client,
    Server,
}

/// mediasoup `DtlsParameters` from `CONNECT_*_TRANSPORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DtlsParameters {
    pub role: DtlsRole,
    /// (algorithm, value) pairs, as sent.
    pub fingerprints: Vec<(String, String)>,
}

impl DtlsParameters {
    pub fn parse(value: &Value) -> Result<DtlsParameters, String> {
        let obj = value.as_object().ok_or("dtlsParameters is not an object")?;
        let role = match obj.get("role") {
            None | Some(Value::Null) => DtlsRole::Auto,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => DtlsRole::Auto,
                "client" => DtlsRole::Client,
                "server" => DtlsRole::Server,
                other => return Err(format!("invalid DtlsRole: {other}")),
            },
            Some(_) => return Err("invalid dtlsParameters.role".into()),
        };
        let list = obj.get("fingerprints").and_then(Value::as_array).ok_or("missing dtlsParameters.fingerprints")?;
        if list.is_empty() {
            return Err("empty dtlsParameters.fingerprints array".into());
        }
        let mut fingerprints = Vec::with_capacity(list.len());
        for fp in list {
            let algorithm = fp.get("algorithm").and_then(Value::as_str).ok_or("missing fingerprint.algorithm")?;
            let value = fp.get("value").and_then(Value::as_str).ok_or("missing fingerprint.value")?;
            fingerprints.push((algorithm.to_ascii_lowercase(), value.to_string()));
        }
        Ok(DtlsParameters { role, fingerprints })
    }
}

/// The largest `BROADCAST` relayed, as JSON (`{"senderId", "message"}`). Odoo broadcasts a
/// sequence number and its peer-to-peer notifications (JSON strings; the largest, an SDP, is
/// 5–20 KiB), so 64 KiB leaves room while a channel's fan-out of it stays small.
pub const MAX_BROADCAST: usize = 64 << 10;

/// A message or request from a client, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Broadcast(Value),
    InfoChange { info: Map<String, Value>, need_refresh: bool },
    ProductionChange { media: MediaType, active: bool },
    ConsumptionChange { session_id: SessionId, states: Vec<(MediaType, bool)> },
    ConnectTransport { direction: Direction, dtls: DtlsParameters },
    InitProducer { media: MediaType, kind: String, rtp_parameters: Value },
}

impl ClientMessage {
    /// Parses a message by name. Unknown names and malformed payloads are errors that say so.
    pub fn parse(name: &str, payload: Value) -> Result<ClientMessage, String> {
        let invalid = |what: &str| format!("invalid {name} payload: {what}");
        match name {
            name::BROADCAST => Ok(ClientMessage::Broadcast(payload)),
            name::C_INFO_CHANGE => {
                let obj = payload.as_object().ok_or_else(|| invalid("not an object"))?;
                let info = match obj.get("info") {
                    Some(Value::Object(info)) => info.clone(),
                    None | Some(Value::Null) => Map::new(),
                    Some(_) => return Err(invalid("info is not an object")),
                };
                let need_refresh = obj.get("needRefresh").is_some_and(truthy);
                Ok(ClientMessage::InfoChange { info, need_refresh })
            }
            name::PRODUCTION_CHANGE => {
                let media = payload
                    .get("type")
                    .and_then(Value::as_str)
                    .and_then(MediaType::parse)
                    .ok_or_else(|| invalid("type must be audio, camera or screen"))?;
                let active = payload.get("active").is_some_and(truthy);
                Ok(ClientMessage::ProductionChange { media, active })
            }
            name::CONSUMPTION_CHANGE => {
                let session_id = payload
                    .get("sessionId")
                    .and_then(SessionId::from_value)
                    .ok_or_else(|| invalid("missing sessionId"))?;
                let states = payload
                    .get("states")
                    .and_then(Value::as_object)
                    .ok_or_else(|| invalid("states is not an object"))?
                    .iter()
                    .filter_map(|(k, v)| Some((MediaType::parse(k)?, truthy(v))))
                    .collect();
                Ok(ClientMessage::ConsumptionChange { session_id, states })
            }
            name::CONNECT_CTS_TRANSPORT | name::CONNECT_STC_TRANSPORT => {
                let direction = if name == name::CONNECT_CTS_TRANSPORT { Direction::Cts } else { Direction::Stc };
                let dtls = payload.get("dtlsParameters").ok_or_else(|| invalid("missing dtlsParameters"))?;
                let dtls = DtlsParameters::parse(dtls).map_err(|e| invalid(&e))?;
                Ok(ClientMessage::ConnectTransport { direction, dtls })
            }
            name::INIT_PRODUCER => {
                let media = payload
                    .get("type")
                    .and_then(Value::as_str)
                    .and_then(MediaType::parse)
                    .ok_or_else(|| invalid("type must be audio, camera or screen"))?;
                let kind = payload.get("kind").and_then(Value::as_str).ok_or_else(|| invalid("missing kind"))?;
                let rtp_parameters =
                    payload.get("rtpParameters").cloned().ok_or_else(|| invalid("missing rtpParameters"))?;
                Ok(ClientMessage::InitProducer { media, kind: kind.to_string(), rtp_parameters })
            }
            other => Err(format!("unknown message {other}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn info_keeps_known_keys_as_booleans_and_omits_unset_ones() {
        let mut info = SessionInfo::default();
        assert_eq!(info.to_value(), json!({}));
        info.apply(json!({"isTalking": 1, "isDeaf": "", "bogus": true, "isCameraOn": null}).as_object().unwrap());
        assert_eq!(info.to_value(), json!({"isTalking": true, "isDeaf": false, "isCameraOn": false}));
    }

    #[test]
    fn parses_client_messages_and_names_what_is_wrong() {
        let m =
            ClientMessage::parse("CONSUMPTION_CHANGE", json!({"sessionId": 3, "states": {"camera": false, "x": true}}))
                .unwrap();
        assert_eq!(
            m,
            ClientMessage::ConsumptionChange {
                session_id: SessionId::from_value(&json!(3)).unwrap(),
                states: vec![(MediaType::Camera, false)]
            }
        );
        assert_eq!(ClientMessage::parse("NOPE", json!({})).unwrap_err(), "unknown message NOPE");
        let err = ClientMessage::parse("INIT_PRODUCER", json!({"type": "hologram", "kind": "video"})).unwrap_err();
        assert!(err.contains("type must be audio, camera or screen"), "{err}");
        let err =
            ClientMessage::parse("CONNECT_CTS_TRANSPORT", json!({"dtlsParameters": {"fingerprints": []}})).unwrap_err();
        assert!(err.contains("empty dtlsParameters.fingerprints"), "{err}");
        let ok = ClientMessage::parse(
            "CONNECT_STC_TRANSPORT",
            json!({"dtlsParameters": {"role": "client", "fingerprints": [{"algorithm": "SHA-256", "value": "AB:CD"}]}}),
        )
        .unwrap();
        assert_eq!(
            ok,
            ClientMessage::ConnectTransport {
                direction: Direction::Stc,
                dtls: DtlsParameters { role: DtlsRole::Client, fingerprints: vec![("sha-256".into(), "AB:CD".into())] }
            }
        );
    }
}
