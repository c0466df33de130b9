//! ringsfu: a thread-per-core WebRTC SFU speaking the Odoo SFU protocol.
//!
//! - [`sfu`]: the sans-IO core (channels, sessions, transports, producers, consumers, forwarding).
//! - [`runtime`]: the shard threads (their loop and io_uring sleep) and the UDP batching around
//!   the core.
//! - [`control`]: the tokio/axum control plane (HTTP routes, WebSocket bus).
//! - [`protocol`]: the Odoo wire protocol (bus envelopes, message names, close codes).
//! - [`auth`]: keys and JWT rules.
//! - [`config`]: settings from flags, environment and file.
//! - [`http_listener`]: the hyper accept loop both binaries serve their axum apps with.
//! - [`gateway`]: `sfu-gateway`, the load balancer in front of many SFUs (health, selection, failover).

pub mod auth;
pub mod client;
pub mod config;
pub mod control;
/// The bodies of the fuzz targets in `fuzz/`, shared with the corpus replay of `tests/fuzz_corpus.rs`.
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod http_listener;
pub mod logging;
pub mod protocol;
pub mod runtime;
pub mod server;
pub mod sfu;

/// Worker threads of the control plane's tokio runtime: it only does HTTP, WebSocket and JSON,
/// so a few threads serve many shards.
pub fn control_plane_threads(shards: usize) -> usize {
    (shards / 8).clamp(2, 8)
}
