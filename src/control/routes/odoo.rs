//! The routes Odoo calls: `/v1/noop`, `/v1/channel`, `/v1/disconnect`, `/v1/stats`.

use crate::control::directory::ChannelRequest;
use crate::control::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ringsfu_common::api_error::ApiError;
use ringsfu_common::auth::Key;
use ringsfu_common::token::{bearer, disconnect_request, verify};
use ringsfu_core::protocol::SessionId;
use ringsfu_core::sfu::{ChannelId, Command, Reply};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/noop", get(noop))
        .route("/v1/channel", get(channel))
        .route("/v1/disconnect", post(disconnect))
        .route("/v1/stats", get(stats))
}

async fn noop() -> Json<Value> {
    Json(json!({"result": "ok"}))
}

async fn channel(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let remote = state.config.proxy.remote_address(peer, &headers);
    if !state.limiter.allow(&remote, Instant::now()) {
        state.metrics.rate_limited.inc();
        return Err(ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many requests from this address"));
    }
    let claims = verify(bearer(&headers)?, &state.config.auth_key)?;
    let issuer = match claims.get("iss") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(ApiError::forbidden("token has no iss claim")),
    };
    let key = match claims.get("key") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => {
            Some(Key::from_base64(s).map_err(|e| ApiError::bad_request(format!("key claim: {e}")))?)
        }
        Some(_) => return Err(ApiError::bad_request("key claim must be a base64 string")),
    };
    if state.is_draining() {
        return Err(ApiError::unavailable("server is draining; ask another SFU"));
    }
    // Only the exact string "false" disables WebRTC, as upstream.
    let webrtc = query.get("webRTC").map(String::as_str) != Some("false");
    let entry = state.open_channel(ChannelRequest { remote_address: &remote, issuer: &issuer, key, webrtc });
    let url = state.config.proxy.public_url(peer, &state.public_host, &headers);
    Ok(Json(json!({"uuid": entry.id.to_string(), "url": url})))
}

async fn disconnect(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let (_, by_channel) = disconnect_request(body, &state.config.auth_key)?;
    let remote = state.config.proxy.remote_address(peer, &headers);
    for (uuid, ids) in &by_channel {
        let Some(entry) = ChannelId::parse(uuid).and_then(|id| state.directory.get(&id)) else { continue };
        if entry.remote_address != remote {
            tracing::warn!(channel = %entry.id, %remote, creator = %entry.remote_address, "disconnect refused: not the channel's creator");
            continue;
        }
        let session_ids: Vec<SessionId> =
            ids.as_array().map(|list| list.iter().filter_map(SessionId::from_value).collect()).unwrap_or_default();
        if !session_ids.is_empty() {
            // Every part: each closes those of its own sessions.
            for part in entry.parts() {
                state.shards[part].tell(Command::Kick { channel: entry.id, session_ids: session_ids.clone() });
            }
        }
    }
    Ok(StatusCode::OK)
}

async fn stats(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    super::ops::check_secret(&state, &headers)?;
    // A channel spread over shards has a part on each: each reports its own sessions.
    let mut by_channel: HashMap<_, ringsfu_core::sfu::ChannelStats> = HashMap::new();
    for shard in &state.shards {
        if let Some(Reply::Stats(list)) = shard.request(Command::Stats).await {
            for s in list {
                match by_channel.get_mut(&s.channel) {
                    Some(sum) => sum.add(&s),
                    None => {
                        by_channel.insert(s.channel, s);
                    }
                }
            }
        }
    }
    let list: Vec<Value> = state
        .directory
        .all()
        .into_iter()
        .map(|entry| {
            let s = by_channel.get(&entry.id);
            let (count, camera, screen, audio_bps, camera_bps, screen_bps) = s
                .map(|s| {
                    (s.sessions, s.camera_count, s.screen_count, s.audio_bitrate, s.camera_bitrate, s.screen_bitrate)
                })
                .unwrap_or_default();
            json!({
                "createDate": iso_time(entry.created),
                "uuid": entry.id.to_string(),
                "remoteAddress": entry.remote_address,
                "sessionsStats": {
                    "count": count,
                    "cameraCount": camera,
                    "screenCount": screen,
                    "incomingBitRate": {
                        "audio": audio_bps,
                        "camera": camera_bps,
                        "screen": screen_bps,
                        "total": audio_bps + camera_bps + screen_bps,
                    },
                },
                "webRtcEnabled": entry.webrtc,
            })
        })
        .collect();
    Ok(Json(Value::Array(list)).into_response())
}

/// `2024-05-01T12:34:56.789Z`, as JavaScript's `toISOString`.
pub fn iso_time(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn iso_time_matches_javascript() {
        assert_eq!(iso_time(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(UNIX_EPOCH + Duration::from_millis(1_714_566_896_789)), "2024-05-01T12:34:56.789Z");
        assert_eq!(iso_time(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }
}
