//! The control plane (tokio + axum): HTTP routes, the WebSocket bus, JWT checks, the channel
//! directory. It never touches media; shards are reached through their command queues.

pub mod bus;
pub mod directory;
pub mod load_report;
pub mod metrics;
pub mod placement;
pub mod rate_limit;
pub mod registration;
pub mod routes;
pub mod state;

pub use state::AppState;
