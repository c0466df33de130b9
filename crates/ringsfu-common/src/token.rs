//! The JWT check of an HTTP request from Odoo (`Authorization: <scheme> <token>` or a body that is
//! a token), as ringsfu and sfu-gateway both do it: any failure is a 401 with the reason.

use crate::api_error::ApiError;
use crate::auth::{self, Claims, Key};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The token of `Authorization: <scheme> <token>`; the scheme word is not checked (Odoo 17 sends
/// `jwt`, later versions `Bearer`).
pub fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization header"))?
        .to_str()
        .map_err(|_| ApiError::unauthorized("Authorization header is not text"))?;
    let (_, token) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| ApiError::unauthorized("Authorization header must be '<scheme> <token>'"))?;
    Ok(token.trim())
}

/// Checks the signature and the time claims against now.
pub fn verify(token: &str, key: &Key) -> Result<Claims, ApiError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    auth::verify(token, key, now).map_err(|e| ApiError::unauthorized(e.to_string()))
}

/// A `/v1/disconnect` body: a token whose `sessionIdsByChannel` is an object (422 otherwise).
/// Returns the other claims and that object.
pub fn disconnect_request(
    body: Result<Bytes, BytesRejection>,
    key: &Key,
) -> Result<(Claims, Map<String, Value>), ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), e.body_text()))?;
    let token = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("body must be a JWT"))?;
    let mut claims = verify(token, key)?;
    match claims.remove("sessionIdsByChannel") {
        Some(Value::Object(by_channel)) => Ok((claims, by_channel)),
        _ => Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "token has no sessionIdsByChannel object")),
    }
}
