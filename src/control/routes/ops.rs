//! Operator routes: `/v1/load` for the gateway, health probes, Prometheus metrics.

use crate::control::load_report::SpreadChannel;
use crate::control::state::AppState;
use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ringsfu_common::api_error::ApiError;
use ringsfu_core::sfu::{Command, Reply};
use serde_json::json;
use std::time::Duration;

/// Header carrying `LOAD_SECRET` when one is configured.
pub const LOAD_SECRET_HEADER: &str = "x-load-secret";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/load", get(load))
        .route("/v1/debug/channel/{uuid}", get(inspect))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
}

/// `LOAD_SECRET`, when set, guards the operator views: `/v1/load`, `/v1/debug`, `/v1/stats` (every
/// channel and its creator's address) and `/metrics`. Health probes stay open.
pub(crate) fn check_secret(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(secret) = &state.config.load_secret {
        let given = headers.get(LOAD_SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
        if !constant_time_eq(given, secret.as_bytes()) {
            return Err(ApiError::unauthorized("missing or wrong X-Load-Secret"));
        }
    }
    Ok(())
}

async fn load(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_secret(&state, &headers)?;
    let mut report = state.load.latest();
    report.draining = state.is_draining();
    report.max_sessions = state.config.max_sessions;
    report.channels = state.directory.len() as u64;
    report.spread = (state.directory.all().iter())
        .filter_map(|e| e.spread().map(|sessions| SpreadChannel { channel: e.id.to_string(), sessions }))
        .collect();
    Ok(Json(report).into_response())
}

/// `GET /v1/debug/channel/<uuid>`: sessions, producers, and each consumer's simulcast layer,
/// budget and switches.
async fn inspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(uuid): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    check_secret(&state, &headers)?;
    let entry = ringsfu_core::sfu::ChannelId::parse(&uuid)
        .and_then(|id| state.directory.get(&id))
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "no such channel"))?;
    let Some(Reply::Inspect(Some(mut view))) =
        state.shards[entry.shard].request(Command::Inspect { channel: entry.id }).await
    else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "no such channel"));
    };
    // Spread over shards: the home part's view, with the other parts' own sessions in full (each
    // part lists every session, the others' as mirrors) and where each part is.
    let mut parts = vec![entry.shard];
    for part in entry.parts().into_iter().filter(|p| *p != entry.shard) {
        if let Some(Reply::Inspect(Some(other))) =
            state.shards[part].request(Command::Inspect { channel: entry.id }).await
        {
            parts.push(part);
            let own = other["sessions"].as_array().into_iter().flatten().filter(|s| s["shard"] == part).cloned();
            let sessions = view["sessions"].as_array_mut().expect("the view lists sessions");
            sessions.retain(|s| s["shard"] != part);
            sessions.extend(own);
        }
    }
    view["parts"] = json!(parts);
    Ok(Json(view).into_response())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when every shard answers its queue within a second, and the server is not draining.
async fn ready(State(state): State<AppState>) -> Response {
    if state.is_draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "draining"}))).into_response();
    }
    for shard in &state.shards {
        let answered = tokio::time::timeout(Duration::from_secs(1), shard.request(Command::Ping)).await;
        if !matches!(answered, Ok(Some(Reply::Pong))) {
            return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "shard": shard.index})))
                .into_response();
        }
    }
    Json(json!({"status": "ready", "shards": state.shards.len()})).into_response()
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    check_secret(&state, &headers)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render()).into_response())
}
