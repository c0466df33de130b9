//! The gateway's HTTP routes: what Odoo calls (`/v1/channel`, `/v1/disconnect`, `/v1/noop`,
//! upstream gateway's `/noop`), what self-registering SFUs call (`/v1/register`) and what
//! operators call (`/v1/health`, `/health/*`, `/metrics`).
//! The token checks are ringsfu's (`control::token`), with the gateway's key.

use super::forward::{self, ChannelAnswer, ChannelRequest};
use super::metrics::RouteLabels;
use super::selection::Hint;
use super::state::Gateway;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ringsfu_common::api_error::ApiError;
use ringsfu_common::auth::{Claims, Key};
use ringsfu_common::http_listener;
use ringsfu_common::token::{bearer, disconnect_request, verify};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Instant;
use tower::{Layer, Service};

/// Request bodies are a JWT; anything larger is refused with 413 (as ringsfu).
pub const MAX_BODY: usize = 64 << 10;

/// The gateway's HTTP service: its routes, and around them once the body bound and the request
/// count. Once around the router, not with `Router::layer`, which wraps every route: each of its
/// layers cost a boxed clone of the route and a boxed future on every request (docs/performance.md,
/// "Gateway alone").
pub fn app(
    gw: Gateway,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send + 'static> + Clone + Send + 'static {
    // A route added here is added to `ROUTES` too, or its requests are not counted.
    let routes = Router::new()
        .route("/v1/channel", get(channel))
        .route("/v1/disconnect", post(disconnect))
        .route("/v1/register", post(super::register::handle))
        .route("/v1/noop", get(noop))
        .route("/noop", get(upstream_gateway_noop))
        .route("/v1/health", get(health))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(gw.clone());
    middleware::from_fn_with_state(gw, front).layer(routes)
}

async fn noop() -> Json<Value> {
    Json(json!({"result": "ok"}))
}

/// The existing Odoo sfu-gateway's liveness route and answer.
async fn upstream_gateway_noop() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

/// The claim channels are keyed by, as ringsfu reads it.
fn issuer(claims: &Claims) -> Result<Cow<'_, str>, ApiError> {
    match claims.get("iss") {
        Some(Value::String(s)) if !s.is_empty() => Ok(Cow::Borrowed(s)),
        Some(Value::Number(n)) => Ok(Cow::Owned(n.to_string())),
        _ => Err(ApiError::forbidden("token has no iss claim")),
    }
}

/// The per-channel key must be one the SFU will accept; refusing it here saves a round trip.
fn check_key_claim(claims: &Claims) -> Result<(), ApiError> {
    match claims.get("key") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.is_empty() => Ok(()),
        Some(Value::String(s)) => {
            Key::from_base64(s).map(|_| ()).map_err(|e| ApiError::bad_request(format!("key claim: {e}")))
        }
        Some(_) => Err(ApiError::bad_request("key claim must be a base64 string")),
    }
}

/// Takes the whole request, so its headers and query are read in place rather than copied out
/// by extractors.
async fn channel(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Result<Response, ApiError> {
    let headers = request.headers();
    let claims = verify(bearer(headers)?, &gw.key)?;
    let issuer = issuer(&claims)?;
    check_key_claim(&claims)?;
    let raw_query = request.uri().query();
    let Query(hints) = match raw_query {
        None => Query(HashMap::new()),
        Some(_) => Query::<HashMap<String, String>>::try_from_uri(request.uri())
            .map_err(|e| ApiError::bad_request(format!("query: {}", e.body_text())))?,
    };
    let forwarded_for = forward::forwarded_for(gw.trust_proxy, peer, headers);
    let query = forward::forwarded_query(raw_query);
    let request = ChannelRequest {
        issuer: &issuer,
        claims: &claims,
        query: query.as_deref(),
        forwarded_for: &forwarded_for,
        hint: Hint {
            region: hints.get("region").map(String::as_str),
            country: hints.get("country").map(String::as_str),
        },
    };
    let answer = forward::channel(&gw, request).await;
    forward::count_answer(&gw, &answer);
    Ok(match answer {
        ChannelAnswer::Created { answer, .. } | ChannelAnswer::Refused { answer, .. } => {
            let content_type = answer.content_type.unwrap_or_else(|| HeaderValue::from_static("application/json"));
            (answer.status, [(header::CONTENT_TYPE, content_type)], Body::from(answer.body)).into_response()
        }
        ChannelAnswer::Unavailable { reason, excluded, retry_after } => {
            tracing::warn!(%issuer, %reason, "no SFU for the channel");
            let body = json!({"error": reason, "excluded": excluded, "retryAfterSeconds": retry_after.as_secs()});
            (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, retry_after.as_secs().to_string())], Json(body))
                .into_response()
        }
    })
}

async fn disconnect(
    State(gw): State<Gateway>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let (claims, by_channel) = disconnect_request(body, &gw.key)?;
    let forwarded_for = forward::forwarded_for(gw.trust_proxy, peer, &headers);
    let failed = forward::disconnect(&gw, &claims, &by_channel, &forwarded_for).await;
    if !failed.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("could not reach the SFU holding a channel ({})", failed.join("; ")),
        ));
    }
    Ok(StatusCode::OK)
}

/// The fleet as this gateway sees it, and as the other gateways last published it (with their age).
async fn health(State(gw): State<Gateway>) -> Json<Value> {
    let mut report = gw.registry().report(Instant::now());
    report["gateway"] = json!({"id": gw.id, "redis": gw.shared.label()});
    report["gateways"] = Value::Array(gw.peers.lock().unwrap_or_else(|p| p.into_inner()).clone());
    Json(report)
}

async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready when at least one SFU is healthy.
async fn ready(State(gw): State<Gateway>) -> Response {
    if gw.registry().is_ready() {
        return Json(json!({"status": "ready"})).into_response();
    }
    (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "reason": "no healthy SFU"})))
        .into_response()
}

async fn metrics(State(gw): State<Gateway>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], gw.metrics.render()).into_response()
}

/// An oversized body is left unread, so the connection cannot carry another request: say so,
/// or a client that pooled it sends its next request into a closing socket. (Done here, in the
/// outermost layer, rather than in a layer of its own: one layer fewer per request.)
fn close_after_unread_body(response: &mut Response) {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
}

/// The routes of [`app`]: a request is counted under its route (a path that is none of them, which
/// only the fallback answers, is not counted).
const ROUTES: [&str; 9] = [
    "/v1/channel",
    "/v1/disconnect",
    "/v1/register",
    "/v1/noop",
    "/noop",
    "/v1/health",
    "/health/live",
    "/health/ready",
    "/metrics",
];

/// Around every request: its body read within [`MAX_BODY`] (the handlers' `Bytes` never see more),
/// then it is counted by route and status.
async fn front(State(gw): State<Gateway>, request: Request, next: Next) -> Response {
    let route = ROUTES.iter().find(|r| **r == request.uri().path()).copied();
    let mut response = http_listener::bounded_body::<MAX_BODY>(request, next).await;
    close_after_unread_body(&mut response);
    if let Some(route) = route {
        gw.metrics.http_requests.get_or_create(&RouteLabels { route, status: response.status().as_u16() }).inc();
    }
    response
}
