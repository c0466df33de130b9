//! HTTP routes, one router per area, merged into the app.

pub mod demo;
pub mod odoo;
pub mod ops;

use super::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use ringsfu_common::api_error::ApiError;

/// Request bodies are tiny (a JWT); anything larger is refused with 413.
pub const MAX_BODY: usize = 64 << 10;
pub fn app(state: AppState) -> Router {
    Router::new()
        .merge(odoo::router())
        .merge(ops::router())
        .merge(demo::router(&state.config))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(super::bus::fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(ringsfu_common::http_listener::bounded_body::<MAX_BODY>))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
}

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string());
    let response = next.run(request).await;
    if let Some(route) = route {
        state
            .metrics
            .http_requests
            .get_or_create(&super::metrics::RouteLabels { route, status: response.status().as_u16() })
            .inc();
    }
    response
}

/// Turns an extractor rejection into our JSON error with the right status.
pub fn rejection(status: StatusCode, message: &str) -> Response {
    ApiError::new(status, message.to_string()).into_response()
}
