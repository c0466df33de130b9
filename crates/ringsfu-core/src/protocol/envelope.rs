//! Bus framing: every frame after authentication is a JSON array of envelopes
//! `{"message": {"name", "payload"}, "needResponse"?: id, "responseTo"?: id}`.

use serde_json::{Map, Value};

/// A request id as sent by the peer (`c_<bus>_<n>` from browsers, `s_<bus>_<n>` from us).
/// Kept as the JSON value it arrived as, and echoed back unchanged.
pub type RequestId = Value;

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum Envelope {
    /// A one-way message.
    Message { name: String, payload: Value },
    /// A request that expects a reply carrying `id`.
    Request { id: RequestId, name: String, payload: Value },
    /// A reply to one of our requests; `message` is `None` for a void reply.
    Response { id: RequestId, message: Option<Value> },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is not valid JSON")]
    NotJson,
    #[error("frame is not a JSON array of envelopes")]
    NotArray,
}

/// Decodes one frame. Envelopes that are not objects or lack a message name are skipped (a
/// peer's bug must not cost its other messages).
pub fn decode_frame(text: &str) -> Result<Vec<Envelope>, FrameError> {
    let value: Value = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
    let Value::Array(items) = value else {
        return Err(FrameError::NotArray);
    };
    Ok(items.into_iter().filter_map(decode_envelope).collect())
}

fn decode_envelope(item: Value) -> Option<Envelope> {
    let Value::Object(mut obj) = item else { return None };
    if let Some(id) = obj.remove("responseTo").filter(|v| !v.is_null()) {
        return Some(Envelope::Response { id, message: obj.remove("message") });
    }
    let Value::Object(mut message) = obj.remove("message")? else {
        return None;
    };
    let Value::String(name) = message.remove("name")? else {
        return None;
    };
    let payload = message.remove("payload").unwrap_or(Value::Null);
    match obj.remove("needResponse").filter(|v| !v.is_null()) {
        Some(id) => Some(Envelope::Request { id, name, payload }),
        None => Some(Envelope::Message { name, payload }),
    }
}

/// `{"name", "payload"}`; a null payload is omitted, as upstream's PING has none.
pub fn message_value(name: &str, payload: Value) -> Value {
    let mut m = Map::with_capacity(2);
    m.insert("name".into(), Value::String(name.into()));
    if !payload.is_null() {
        m.insert("payload".into(), payload);
    }
    Value::Object(m)
}

pub fn encode_message(name: &str, payload: Value) -> Value {
    let mut env = Map::with_capacity(1);
    env.insert("message".into(), message_value(name, payload));
    Value::Object(env)
}

pub fn encode_request(id: &str, name: &str, payload: Value) -> Value {
    let mut env = Map::with_capacity(2);
    env.insert("message".into(), message_value(name, payload));
    env.insert("needResponse".into(), Value::String(id.into()));
    Value::Object(env)
}

/// A reply. `Ok(None)` is a void reply (`message` omitted). An error reply carries `error`
/// and no `message` — a ringsfu addition that stock clients read as a void reply.
pub fn encode_response(id: &RequestId, result: Result<Option<Value>, String>) -> Value {
    let mut env = Map::with_capacity(2);
    match result {
        Ok(Some(message)) => {
            env.insert("message".into(), message);
        }
        Ok(None) => {}
        Err(error) => {
            env.insert("error".into(), Value::String(error));
        }
    }
    env.insert("responseTo".into(), id.clone());
    Value::Object(env)
}

/// An envelope's JSON text.
pub fn to_text(envelope: &Value) -> String {
    serde_json::to_string(envelope).expect("JSON values always serialize")
}

/// The text of a `BROADCAST` message whose payload is already JSON text (written once for every
/// receiver).
pub fn broadcast_text(payload: &str) -> String {
    format!(r#"{{"message":{{"name":"BROADCAST","payload":{payload}}}}}"#)
}

/// A frame holding the given envelopes (each one's JSON text).
pub fn encode_frame(envelopes: &[String]) -> String {
    let mut frame = String::with_capacity(2 + envelopes.iter().map(|e| e.len() + 1).sum::<usize>());
    frame.push('[');
    for (i, envelope) in envelopes.iter().enumerate() {
        if i > 0 {
            frame.push(',');
        }
        frame.push_str(envelope);
    }
    frame.push(']');
    frame
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_each_envelope_kind_and_skips_broken_ones() {
        let frame = json!([
            {"message": {"name": "BROADCAST", "payload": {"a": 1}}},
            {"message": {"name": "INIT_PRODUCER", "payload": {}}, "needResponse": "c_0_1"},
            {"responseTo": "s_0_0", "message": {"codecs": []}},
            {"responseTo": "s_0_1"},
            {"message": {"payload": 1}},
            42,
            {"message": {"name": "PING"}}
        ])
        .to_string();
        let got = decode_frame(&frame).unwrap();
        assert_eq!(
            got,
            vec![
                Envelope::Message { name: "BROADCAST".into(), payload: json!({"a": 1}) },
                Envelope::Request { id: json!("c_0_1"), name: "INIT_PRODUCER".into(), payload: json!({}) },
                Envelope::Response { id: json!("s_0_0"), message: Some(json!({"codecs": []})) },
                Envelope::Response { id: json!("s_0_1"), message: None },
                Envelope::Message { name: "PING".into(), payload: Value::Null },
            ]
        );
        assert_eq!(decode_frame("{"), Err(FrameError::NotJson));
        assert_eq!(decode_frame("{}"), Err(FrameError::NotArray));
    }

    #[test]
    fn encodes_like_upstream() {
        assert_eq!(
            encode_request("s_1_0", "PING", Value::Null),
            json!({"message": {"name": "PING"}, "needResponse": "s_1_0"})
        );
        assert_eq!(encode_response(&json!("c_0_2"), Ok(None)), json!({"responseTo": "c_0_2"}));
        assert_eq!(
            encode_response(&json!("c_0_2"), Ok(Some(json!({"id": "x"})))),
            json!({"message": {"id": "x"}, "responseTo": "c_0_2"})
        );
        assert_eq!(encode_response(&json!("c_0_3"), Err("bad".into())), json!({"error": "bad", "responseTo": "c_0_3"}));
        // A broadcast written from its payload's text reads as the same JSON; a frame is an array.
        let payload = json!({"senderId": 5, "message": {"x": [1, "]"]}});
        let text = broadcast_text(&payload.to_string());
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), encode_message("BROADCAST", payload.clone()));
        let frame = encode_frame(&[text.clone(), to_text(&json!({"responseTo": 1}))]);
        assert_eq!(
            decode_frame(&frame).unwrap(),
            vec![
                Envelope::Message { name: "BROADCAST".into(), payload },
                Envelope::Response { id: json!(1), message: None }
            ]
        );
        assert_eq!(encode_frame(&[]), "[]");
    }
}
