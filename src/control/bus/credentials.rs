//! The first frame of a WebSocket: which channel, as whom. Verified with the channel's key, or
//! the global key for channels without one (and for the legacy form without `channelUUID`).

use crate::control::directory::{ChannelEntry, Directory};
use ringsfu_common::auth::{self, Key};
use ringsfu_core::protocol::SessionId;
use ringsfu_core::sfu::ChannelId;
use serde_json::Value;
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("first frame is not JSON credentials")]
    Malformed,
    #[error("channel does not exist")]
    UnknownChannel,
    #[error("invalid token: {0}")]
    Token(#[from] auth::JwtError),
    #[error("a channel with a key can only be accessed by providing a channelUUID")]
    KeyedChannelWithoutUuid,
    #[error("token has no valid session_id")]
    MissingSessionId,
}

pub struct Authenticated {
    pub channel: Arc<ChannelEntry>,
    pub session_id: SessionId,
}

/// Checks `{"channelUUID", "jwt"}` (or the legacy JSON string holding only the jwt).
pub fn authenticate(
    frame: &str,
    directory: &Directory,
    global_key: &Key,
    now: f64,
) -> Result<Authenticated, AuthError> {
    let credentials: Value = serde_json::from_str(frame).map_err(|_| AuthError::Malformed)?;
    let (channel_uuid, jwt) = match &credentials {
        Value::String(jwt) => (None, jwt.as_str()),
        Value::Object(obj) => {
            let jwt = obj.get("jwt").and_then(Value::as_str).ok_or(AuthError::Malformed)?;
            let uuid = match obj.get("channelUUID") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.as_str()),
                Some(_) => return Err(AuthError::Malformed),
            };
            (uuid, jwt)
        }
        _ => return Err(AuthError::Malformed),
    };
    let channel = match channel_uuid {
        Some(uuid) => Some(ChannelId::parse(uuid).and_then(|id| directory.get(&id)).ok_or(AuthError::UnknownChannel)?),
        None => None,
    };
    let key = channel.as_ref().and_then(|c| c.key.as_ref()).unwrap_or(global_key);
    let claims = auth::verify(jwt, key, now)?;
    let channel = match channel {
        Some(c) => c,
        None => {
            let id = claims
                .get("sfu_channel_uuid")
                .and_then(Value::as_str)
                .and_then(ChannelId::parse)
                .ok_or(AuthError::UnknownChannel)?;
            let c = directory.get(&id).ok_or(AuthError::UnknownChannel)?;
            if c.key.is_some() {
                return Err(AuthError::KeyedChannelWithoutUuid);
            }
            c
        }
    };
    let session_id = claims.get("session_id").and_then(SessionId::from_value).ok_or(AuthError::MissingSessionId)?;
    Ok(Authenticated { channel, session_id })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::directory::ChannelRequest;
    use serde_json::json;

    const NOW: f64 = 1_800_000_000.0;

    fn setup() -> (Directory, Key, Arc<ChannelEntry>, Arc<ChannelEntry>) {
        let d = Directory::new(1);
        let global = Key::from_bytes(b"global");
        let (open, _) = d.get_or_create(
            ChannelRequest { remote_address: "a", issuer: "1", key: None, webrtc: false },
            |_| 0,
            |_| {},
        );
        let (keyed, _) = d.get_or_create(
            ChannelRequest { remote_address: "a", issuer: "2", key: Some(Key::from_bytes(b"channel")), webrtc: false },
            |_| 0,
            |_| {},
        );
        (d, global, open, keyed)
    }

    fn token(claims: Value, key: &Key) -> String {
        auth::sign(claims.as_object().unwrap(), key)
    }

    #[test]
    fn each_credential_form_and_its_failures() {
        let (d, global, open, keyed) = setup();
        let channel_key = Key::from_bytes(b"channel");
        let ok =
            |frame: String| authenticate(&frame, &d, &global, NOW).map(|a| (a.channel.id, a.session_id.to_string()));

        // Modern form, channel with its own key.
        let jwt = token(json!({"session_id": 7}), &channel_key);
        assert_eq!(
            ok(json!({"channelUUID": keyed.id.to_string(), "jwt": jwt}).to_string()),
            Ok((keyed.id, "7".into()))
        );
        // Same channel, token signed with the global key: refused.
        let jwt = token(json!({"session_id": 7}), &global);
        assert!(matches!(
            ok(json!({"channelUUID": keyed.id.to_string(), "jwt": jwt}).to_string()),
            Err(AuthError::Token(_))
        ));
        // Legacy form: JSON string, channel from the claims.
        let jwt = token(json!({"session_id": "s", "sfu_channel_uuid": open.id.to_string()}), &global);
        assert_eq!(ok(json!(jwt).to_string()), Ok((open.id, "s".into())));
        // Legacy form cannot reach a keyed channel.
        let jwt = token(json!({"session_id": 1, "sfu_channel_uuid": keyed.id.to_string()}), &global);
        assert_eq!(ok(json!(jwt).to_string()), Err(AuthError::KeyedChannelWithoutUuid));
        // Falsy session ids.
        let jwt = token(json!({"session_id": 0}), &global);
        assert_eq!(
            ok(json!({"channelUUID": open.id.to_string(), "jwt": jwt}).to_string()),
            Err(AuthError::MissingSessionId)
        );
        // Unknown channel, malformed frames.
        let jwt = token(json!({"session_id": 1}), &global);
        assert_eq!(
            ok(json!({"channelUUID": "00000000-0000-4000-8000-000000000000", "jwt": jwt}).to_string()),
            Err(AuthError::UnknownChannel)
        );
        assert_eq!(ok("not json".into()), Err(AuthError::Malformed));
        assert_eq!(ok("42".into()), Err(AuthError::Malformed));
        assert_eq!(ok(json!({"channelUUID": open.id.to_string()}).to_string()), Err(AuthError::Malformed));
    }
}
