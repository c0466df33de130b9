//! The test-call page (`DEMO`): `/demo` joins a channel from the browser with mediasoup-client and
//! shows every participant's video with its transport's state, ICE path, bitrate and layer. It
//! answers "do browsers reach this SFU?" without an Odoo install: `/demo/join` does what Odoo's
//! server would, with ringsfu's own key.
//!
//! The page's script is built from `demo/` (npm, esbuild) into `demo/demo.js` next to this file
//! and embedded; `tests/demo_page.rs` checks the committed build matches its sources.

use crate::config::Config;
use crate::control::directory::ChannelRequest;
use crate::control::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ringsfu_common::api_error::ApiError;
use ringsfu_common::auth::{self, Key};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const PAGE: &str = include_str!("demo/index.html");
const SCRIPT: &str = include_str!("demo/demo.js");

/// The script's ETag: browsers revalidate it and get 304 until the binary changes.
static SCRIPT_ETAG: LazyLock<HeaderValue> = LazyLock::new(|| {
    let digest = Sha256::digest(SCRIPT.as_bytes());
    let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex digits are a valid header value")
});

/// Demo channels are keyed by room alone, whoever asks, so two machines asking for one room
/// share its channel. This is their creator address in the directory: no caller has it, so
/// Odoo's channels and `/v1/disconnect` never meet them.
const DEMO_CREATOR: &str = "demo";

/// Longest room name.
const MAX_ROOM: usize = 64;

/// Session tokens last as long as Odoo's.
const SESSION_TOKEN_SECONDS: u64 = 8 * 3600;

/// Session ids of the page's participants: fresh for each join, never reused in this process.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The page's routes when `DEMO` is on; none (404) otherwise.
pub fn router(config: &Config) -> Router<AppState> {
    if !config.demo {
        return Router::new();
    }
    Router::new().route("/demo", get(page)).route("/demo/demo.js", get(script)).route("/demo/join", post(join))
}

async fn page() -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, PAGE).into_response()
}

async fn script(headers: HeaderMap) -> Response {
    let etag = SCRIPT_ETAG.clone();
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|tag| tag.trim() == etag || tag.trim() == "*"));
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::ETAG, etag),
    ];
    if cached {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, SCRIPT).into_response()
}

#[derive(Deserialize)]
struct JoinRequest {
    room: String,
}

/// `{"room"}` → a channel for that room and a session token for a fresh session, as Odoo's server
/// would hand its browser client: `{url, channelUUID, jwt, sessionId}`.
async fn join(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let remote = state.config.proxy.remote_address(peer, &headers);
    if !state.limiter.allow(&remote, Instant::now()) {
        state.metrics.rate_limited.inc();
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests from this address"));
    }
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let room = room(&body)?;
    if state.is_draining() {
        return Err(ApiError::unavailable("server is draining; ask another SFU"));
    }
    let issuer = format!("demo:{room}");
    // The same steps as `/v1/channel`, for a channel with a key of its own (as Odoo 18 gives each
    // channel): the session tokens below are signed with it, so they open this demo channel and
    // no other. Signed with the server's key they would open every channel created without a
    // `key` claim whose uuid the holder learns.
    let entry = state.open_channel(ChannelRequest {
        remote_address: DEMO_CREATOR,
        issuer: &issuer,
        key: Some(Key::generate()),
        webrtc: true,
    });
    let session_id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let claims = json!({
        "sfu_channel_uuid": entry.id.to_string(),
        "session_id": session_id,
        "exp": now + SESSION_TOKEN_SECONDS,
    });
    let key = entry.key.as_ref().expect("demo channels are created with a key");
    let jwt = auth::sign(claims.as_object().expect("a JSON object"), key);
    let url = state.config.proxy.public_url(peer, &state.public_host, &headers);
    Ok(Json(json!({"url": url, "channelUUID": entry.id.to_string(), "jwt": jwt, "sessionId": session_id})))
}

/// The room of a join request: 1 to 64 of `A-Z a-z 0-9 _ -`.
fn room(body: &[u8]) -> Result<String, ApiError> {
    let request: JoinRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("body must be {{\"room\": \"<name>\"}}: {e}")))?;
    let valid = (1..=MAX_ROOM).contains(&request.room.len())
        && request.room.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(ApiError::bad_request(format!(
            "room must be 1 to {MAX_ROOM} characters of A-Z, a-z, 0-9, _ and -"
        )));
    }
    Ok(request.room)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each row protects one rule of room names: (body, accepted room or None).
    #[test]
    fn room_names() {
        let long = "a".repeat(MAX_ROOM);
        let too_long = format!(r#"{{"room":"{}"}}"#, "a".repeat(MAX_ROOM + 1));
        let rows: Vec<(String, Option<&str>)> = vec![
            (r#"{"room":"demo"}"#.into(), Some("demo")),
            (r#"{"room":"Team_3-b"}"#.into(), Some("Team_3-b")),
            (format!(r#"{{"room":"{long}"}}"#), Some(long.as_str())),
            (too_long, None),
            (r#"{"room":""}"#.into(), None),
            (r#"{"room":"a b"}"#.into(), None),
            (r#"{"room":"../x"}"#.into(), None),
            (r#"{"room":"é"}"#.into(), None),
            (r#"{"room":7}"#.into(), None),
            (r#"{}"#.into(), None),
            ("room=demo".into(), None),
        ];
        for (body, expected) in rows {
            let got = room(body.as_bytes());
            match expected {
                Some(name) => assert_eq!(got.unwrap(), name, "{body}"),
                None => assert_eq!(got.unwrap_err().status, StatusCode::BAD_REQUEST, "{body}"),
            }
        }
    }
}
