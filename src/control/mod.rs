//! The control plane (tokio + axum): HTTP routes, the WebSocket bus, JWT checks, the channel
//! directory. It never touches media; shards are reached through their command queues.

pub mod bus;
pub mod caller;
pub mod directory;
pub mod error;
pub mod load;
pub mod metrics;
pub mod rate_limit;
pub mod registration;
pub mod routes;
pub mod state;
pub mod token;

pub use state::AppState;
