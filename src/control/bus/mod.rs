//! The WebSocket bus of the Odoo protocol (any path upgrades to it).

mod auth_log;
mod batcher;
mod budget;
pub mod connection;
pub mod credentials;

pub use auth_log::AuthFailureLog;
pub use batcher::{BATCH_WINDOW, Batcher};

use super::state::AppState;
use axum::Extension;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use ringsfu_common::api_error::ApiError;
use ringsfu_common::http_listener::ConnectionSlot;
use std::net::SocketAddr;
use std::time::Instant;

/// Largest frame a client may send (Odoo's biggest, the device capabilities, are a few KiB).
pub const MAX_FRAME: usize = 256 << 10;
/// What one read from a WebSocket takes in at most; a larger frame arrives over several reads.
/// Bus frames are mostly under 1 KiB.
const READ_BUFFER: usize = 4 << 10;

/// Upgrades any path to the bus; everything else that matched no route is a 404 (or 405).
pub async fn fallback(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    headers: HeaderMap,
    slot: Option<Extension<ConnectionSlot>>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        let status = if method == Method::GET || method == Method::POST {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::METHOD_NOT_ALLOWED
        };
        let message = if status == StatusCode::NOT_FOUND { "not found" } else { "method not allowed" };
        state.count("fallback", status);
        return ApiError::new(status, message).into_response();
    };
    let remote = state.config.proxy.remote_address(peer, &headers);
    if !state.limiter.allow(&remote, Instant::now()) {
        state.metrics.rate_limited.inc();
        state.count("websocket", StatusCode::TOO_MANY_REQUESTS);
        return ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too many connections from this address").into_response();
    }
    state.count("websocket", StatusCode::SWITCHING_PROTOCOLS);
    upgrade
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        // tungstenite's 128 KiB defaults made every socket, authenticated or not, cost ~140 KB.
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .on_upgrade(move |socket| async move {
            // Held until the socket closes: the connection cap counts it.
            let _slot = slot;
            connection::run(state, socket, remote).await
        })
}
